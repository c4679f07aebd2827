// Package slapdtest starts a real OpenLDAP server (slapd, Debian's package of
// that name) for tests: a private configuration and database in a test's
// temporary directory, listening on a free loopback port, with the schemas an
// inetOrgPerson needs and the base entries dc=example,dc=org and
// ou=people,dc=example,dc=org. A test fails, never skips, when slapd is not
// installed: `make test` installs it.
package slapdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The directory every server holds.
const (
	Suffix   = "dc=example,dc=org"
	People   = "ou=people,dc=example,dc=org"
	RootDN   = "cn=admin,dc=example,dc=org"
	Password = "slapdtest-secret"
)

// Options configure Start. The zero value serves plain LDAP.
type Options struct {
	// Config is appended to the database section of slapd.conf (e.g. an
	// overlay).
	Config string
	// Modules are loaded besides back_mdb (e.g. "constraint").
	Modules []string
	// CertFile and KeyFile, when set, are the server's TLS certificate and key
	// (PEM): the server then accepts StartTLS and also listens for ldaps://.
	CertFile, KeyFile string
}

// Server is one running slapd.
type Server struct {
	t    testing.TB
	dir  string
	conf string
	// URL is ldap://127.0.0.1:<port>; TLSURL is ldaps://localhost:<port>
	// when the server has a certificate.
	URL, TLSURL string
	urls        string
	cmd         *exec.Cmd
	exited      chan struct{}
}

// Start starts slapd and adds the base entries. The server stops when the
// test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("slapd")
	if err != nil {
		bin = "/usr/sbin/slapd"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("slapd is not installed (Debian package slapd; make test installs it): %v", err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, dir: dir, conf: filepath.Join(dir, "slapd.conf")}
	var b strings.Builder
	for _, schema := range []string{"core", "cosine", "inetorgperson"} {
		fmt.Fprintf(&b, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	fmt.Fprintf(&b, "modulepath /usr/lib/ldap\nmoduleload back_mdb\n")
	for _, m := range opts.Modules {
		fmt.Fprintf(&b, "moduleload %s\n", m)
	}
	fmt.Fprintf(&b, "pidfile %s\n", filepath.Join(dir, "slapd.pid"))
	if opts.CertFile != "" {
		fmt.Fprintf(&b, "TLSCertificateFile %s\nTLSCertificateKeyFile %s\n", opts.CertFile, opts.KeyFile)
	}
	fmt.Fprintf(&b, "database mdb\nmaxsize 16777216\nsuffix %q\nrootdn %q\nrootpw %s\ndirectory %s\n",
		Suffix, RootDN, Password, filepath.Join(dir, "db"))
	b.WriteString(opts.Config)
	if err := os.WriteFile(s.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", port)
	s.urls = s.URL + "/"
	if opts.CertFile != "" {
		tlsPort := freePort(t)
		s.TLSURL = fmt.Sprintf("ldaps://localhost:%d", tlsPort)
		s.urls += fmt.Sprintf(" ldaps://127.0.0.1:%d/", tlsPort)
	}
	s.startProcess(bin)
	t.Cleanup(s.Stop)

	conn := s.Admin()
	defer conn.Close()
	base := ldap.NewAddRequest(Suffix, nil)
	base.Attribute("objectClass", []string{"dcObject", "organization"})
	base.Attribute("o", []string{"Example"})
	base.Attribute("dc", []string{"example"})
	people := ldap.NewAddRequest(People, nil)
	people.Attribute("objectClass", []string{"organizationalUnit"})
	people.Attribute("ou", []string{"people"})
	for _, req := range []*ldap.AddRequest{base, people} {
		if err := conn.Add(req); err != nil {
			t.Fatalf("slapd: add %s: %v", req.DN, err)
		}
	}
	return s
}

// startProcess runs slapd in the foreground (-d 0) and waits until it
// accepts connections.
func (s *Server) startProcess(bin string) {
	s.t.Helper()
	log, err := os.OpenFile(filepath.Join(s.dir, "slapd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	s.cmd = exec.Command(bin, "-f", s.conf, "-h", s.urls, "-d", "0")
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("slapd: %v", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	addr := strings.TrimPrefix(s.URL, "ldap://")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.exited:
			out, _ := os.ReadFile(filepath.Join(s.dir, "slapd.log"))
			s.t.Fatalf("slapd exited at start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("slapd did not listen on %s within 20 s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops slapd (it may be started again with Restart).
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts a stopped slapd again on the same port and database.
func (s *Server) Restart() {
	s.t.Helper()
	bin := "/usr/sbin/slapd"
	if p, err := exec.LookPath("slapd"); err == nil {
		bin = p
	}
	s.startProcess(bin)
}

// Admin returns a connection bound as the root DN. The caller closes it.
func (s *Server) Admin() *ldap.Conn {
	s.t.Helper()
	conn, err := ldap.DialURL(s.URL)
	if err != nil {
		s.t.Fatalf("slapd: dial: %v", err)
	}
	if err := conn.Bind(RootDN, Password); err != nil {
		conn.Close()
		s.t.Fatalf("slapd: bind: %v", err)
	}
	return conn
}

// Entries returns the entries under People matching filter, with all their
// attributes.
func (s *Server) Entries(ctx context.Context, filter string) []*ldap.Entry {
	s.t.Helper()
	conn := s.Admin()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	res, err := conn.Search(ldap.NewSearchRequest(People, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		filter, []string{"*"}, nil))
	if err != nil {
		s.t.Fatalf("slapd: search %s: %v", filter, err)
	}
	return res.Entries
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
