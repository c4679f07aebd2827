// Command caledger is an event-sourced, audit-first certificate authority.
//
// Usage:
//
//	caledger serve [--data DIR] [--addr ADDR]
//	caledger version
//	caledger help [COMMAND]
//
// # serve
//
// serve runs the HTTPS API until SIGINT or SIGTERM, then drains in-flight
// requests. DIR (default ./data, or $CALEDGER_DATA) is created with mode
// 0700. On first start a TLS key and a self-signed certificate for
// localhost, 127.0.0.1 and ::1 are written to DIR/tls/ and reused afterwards;
// clients trust DIR/tls/server.pem, e.g. curl --cacert DIR/tls/server.pem.
// ADDR defaults to 127.0.0.1:8443, or $CALEDGER_ADDR. Logs go to stderr; once
// listening, serve logs one line with msg=listening and the bound address
// (addr), which tells the port when ADDR ends in :0.
//
// # Exit status
//
// 0 on success, 2 for a command line that cannot be run, 1 for any other
// error; the error is printed to stderr.
package main
