package kurrenttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/gossip"
	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/serverfeatures"
	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/shared"
	streamspb "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	v2 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/streams"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Options configure a Server. The zero value is the default.
type Options struct {
	// Users maps user names to passwords. When it is empty every request is
	// allowed; otherwise the streams RPCs need HTTP Basic credentials of one of
	// them (server features and gossip never do, as on KurrentDB).
	Users map[string]string
	// Version is the server version reported by the server-features RPC
	// (default "26.1.0", the first release with AppendRecords).
	Version string
	// MaxAppendSize bounds the bytes (data and metadata) of one append, like
	// KurrentDB's MaxAppendSize setting. Default 16 MiB, the highest value
	// KurrentDB accepts; KurrentDB's own default is 1 MiB.
	MaxAppendSize int
	// MaxRecordSize bounds one record of an AppendRecords call (default
	// MaxAppendSize).
	MaxRecordSize int
	// Dir receives ca.pem, the certificate authority to verify the server with.
	// Default: a new temporary directory, removed by Close.
	Dir string
	// Addr is the address to listen on (default "127.0.0.1:0").
	Addr string
}

// Fault is a failure injected into the next append (v1 Append or AppendRecords).
type Fault int32

const (
	// NoFault clears a pending fault.
	NoFault Fault = iota
	// DropBeforeCommit cuts every connection before the append is applied:
	// nothing is written and the client sees the connection fail.
	DropBeforeCommit
	// DropAfterCommit applies the append, then cuts every connection before the
	// reply: the events are durable but the client never hears so.
	DropAfterCommit
	// StopAfterCommit applies the append, then stops the server (see Stop)
	// before the reply. It stays down until Restart.
	StopAfterCommit
)

func (f Fault) String() string {
	switch f {
	case NoFault:
		return "NoFault"
	case DropBeforeCommit:
		return "DropBeforeCommit"
	case DropAfterCommit:
		return "DropAfterCommit"
	case StopAfterCommit:
		return "StopAfterCommit"
	}
	return fmt.Sprintf("Fault(%d)", int32(f))
}

// Server is an in-process KurrentDB test double. It is safe for concurrent use.
type Server struct {
	opts   Options
	log    *eventLog
	caPEM  []byte
	caFile string
	tmpDir string
	tlsCfg *tls.Config

	// leader is set on a follower (StartFollower): it shares the leader's log
	// and answers requests that require the leader with "not leader".
	leader *Server

	mu       sync.Mutex
	addr     string
	grpc     *grpc.Server
	lis      *trackingListener
	stopping chan struct{} // closed by Stop: live subscriptions end
	fault    Fault
	appends  int
	// Streams RPCs served, and how many of them asked for the leader.
	requests, leaderRequests, notLeader int
}

// Start generates a certificate authority and a server certificate for
// localhost and 127.0.0.1 (in memory; only the CA certificate is written, to
// Dir), and starts serving.
func Start(opts Options) (*Server, error) {
	if opts.Version == "" {
		opts.Version = "26.1.0"
	}
	if opts.MaxAppendSize <= 0 {
		opts.MaxAppendSize = 16 << 20
	}
	if opts.MaxRecordSize <= 0 {
		opts.MaxRecordSize = opts.MaxAppendSize
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	s := &Server{opts: opts, log: newEventLog()}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "kurrenttest-")
		if err != nil {
			return nil, err
		}
		opts.Dir, s.tmpDir = dir, dir
	}
	cert, caPEM, err := newCertificates()
	if err != nil {
		s.removeTemp()
		return nil, err
	}
	s.caPEM = caPEM
	s.caFile = filepath.Join(opts.Dir, "ca.pem")
	if err := os.WriteFile(s.caFile, caPEM, 0o600); err != nil {
		s.removeTemp()
		return nil, err
	}
	s.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.seed()
	if err := s.listen(opts.Addr); err != nil {
		s.removeTemp()
		return nil, err
	}
	return s, nil
}

// StartFollower starts a second node that shares s's events and TLS identity,
// as a follower: a streams RPC that carries the "requires-leader" header is
// answered as KurrentDB answers it, with a NOT_FOUND status whose trailers name
// the leader (s), which the client follows. Other requests are served from the
// shared events. Its gossip lists both nodes. Close it before s.
func (s *Server) StartFollower() (*Server, error) {
	f := &Server{opts: s.opts, log: s.log, caPEM: s.caPEM, caFile: s.caFile, tlsCfg: s.tlsCfg, leader: s}
	if err := f.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return f, nil
}

// Requests returns how many streams RPCs the node received, how many of them
// carried "requires-leader: true", and how many it refused as a follower.
func (s *Server) Requests() (total, requireLeader, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.leaderRequests, s.notLeader
}

// seed writes the kind of system event a fresh KurrentDB node has in $all, so
// clients that forget to filter system streams notice.
func (s *Server) seed() {
	s.log.mu.Lock()
	defer s.log.mu.Unlock()
	var id [16]byte
	rand.Read(id[:])
	s.log.appendLocked([]proposal{{
		stream:   "$settings",
		id:       id,
		metadata: map[string]string{"type": "$settings", "content-type": "application/json", "created": ticks(time.Now())},
		custom:   []byte{},
		data:     []byte(`{"$userStreamAcl":{"$r":"$all"}}`),
	}})
}

func (s *Server) listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kurrenttest: listen: %w", err)
	}
	lis := &trackingListener{Listener: l, conns: map[net.Conn]struct{}{}}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.tlsCfg)),
		grpc.MaxRecvMsgSize(64<<20),
		grpc.MaxSendMsgSize(64<<20),
		grpc.UnaryInterceptor(s.unaryAuth),
		grpc.StreamInterceptor(s.streamAuth),
	)
	streamspb.RegisterStreamsServer(g, &streamsServer{Server: s})
	v2.RegisterStreamsServiceServer(g, &v2Server{Server: s})
	serverfeatures.RegisterServerFeaturesServer(g, &featuresServer{Server: s})
	gossip.RegisterGossipServer(g, &gossipServer{Server: s})
	s.mu.Lock()
	s.addr, s.grpc, s.lis, s.stopping = l.Addr().String(), g, lis, make(chan struct{})
	s.mu.Unlock()
	go g.Serve(lis)
	return nil
}

// stoppingChan returns the channel Stop closes, for handlers to wait on.
func (s *Server) stoppingChan() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// CAFile returns the path of the PEM certificate authority that signed the
// server's certificate.
func (s *Server) CAFile() string { return s.caFile }

// CAPEM returns the certificate authority as PEM.
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.caPEM...) }

// ConnectionString returns a kurrentdb:// connection string for the server that
// verifies its certificate with CAFile, with credentials when user is not empty.
func (s *Server) ConnectionString(user, password string) string {
	u := url.URL{Scheme: "kurrentdb", Host: s.Addr(), RawQuery: "tlsCAFile=" + url.QueryEscape(s.caFile)}
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

// InjectAppendFault makes the next append fail as f says.
func (s *Server) InjectAppendFault(f Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

func (s *Server) takeFault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.fault
	s.fault = NoFault
	s.appends++
	return f
}

// Appends returns how many append RPCs reached the point of being applied.
func (s *Server) Appends() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appends
}

// drop cuts every connection (or, for StopAfterCommit, stops the server) and
// returns the error the handler ends with; the client never receives it, since
// its connection is gone.
func (s *Server) drop(f Fault) error {
	s.DropConnections()
	if f == StopAfterCommit {
		s.stop(false) // not waiting: Stop may wait for this very handler
	}
	return status.Error(codes.Unavailable, "connection dropped by kurrenttest")
}

// DropConnections closes every open client connection, as a network cut would.
// The server keeps listening, so clients can reconnect at once.
func (s *Server) DropConnections() {
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	if lis != nil {
		lis.closeAll()
	}
}

// Stop stops serving: the listener and every connection close, live
// subscriptions end. The stored events are kept for Restart.
func (s *Server) Stop() { s.stop(true) }

func (s *Server) stop(wait bool) {
	s.mu.Lock()
	g, stopping := s.grpc, s.stopping
	s.grpc, s.lis = nil, nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	close(stopping)
	if wait {
		g.Stop()
	} else {
		go g.Stop()
	}
}

// Restart serves again on the same address, with the same events.
func (s *Server) Restart() error {
	s.mu.Lock()
	running, addr := s.grpc != nil, s.addr
	s.mu.Unlock()
	if running {
		return errors.New("kurrenttest: server is running")
	}
	var err error
	for range 50 { // the port may linger briefly after Stop
		if err = s.listen(addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the server and removes the temporary directory Start created.
func (s *Server) Close() error {
	s.Stop()
	return s.removeTemp()
}

func (s *Server) removeTemp() error {
	if s.tmpDir == "" {
		return nil
	}
	return os.RemoveAll(s.tmpDir)
}

// streamsServer serves the v1 streams service: Read and Append.
type streamsServer struct {
	streamspb.UnimplementedStreamsServer
	*Server
}

type featuresServer struct {
	serverfeatures.UnimplementedServerFeaturesServer
	*Server
}

// GetSupportedMethods lists exactly the RPCs the double implements; the client
// enables AppendRecords only when "appendrecords" is listed.
func (s *featuresServer) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	m := func(service, method string) *serverfeatures.SupportedMethod {
		return &serverfeatures.SupportedMethod{ServiceName: service, MethodName: method}
	}
	methods := []*serverfeatures.SupportedMethod{
		m("event_store.client.streams.streams", "read"),
		m("event_store.client.streams.streams", "append"),
		m("event_store.client.gossip.gossip", "read"),
		m("event_store.client.server_features.serverfeatures", "getsupportedmethods"),
	}
	if major, minor := parseVersion(s.opts.Version); major > 26 || major == 26 && minor >= 1 {
		methods = append(methods, m("kurrentdb.protocol.v2.streams.streamsservice", "appendrecords"))
	}
	return &serverfeatures.SupportedMethods{Methods: methods, EventStoreServerVersion: s.opts.Version}, nil
}

func parseVersion(v string) (major, minor int) {
	parts := strings.SplitN(v, ".", 3)
	major, _ = strconv.Atoi(parts[0])
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	return major, minor
}

type gossipServer struct {
	gossip.UnimplementedGossipServer
	*Server
}

// Read reports a cluster of one: this node, alive and leader.
func (s *gossipServer) Read(context.Context, *shared.Empty) (*gossip.ClusterInfo, error) {
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	p, _ := strconv.Atoi(port)
	var id [16]byte
	self := &gossip.MemberInfo{
		InstanceId:   toUUID(id, true),
		TimeStamp:    time.Now().UnixNano() / 100,
		State:        gossip.MemberInfo_Leader,
		IsAlive:      true,
		HttpEndPoint: &gossip.EndPoint{Address: host, Port: uint32(p)},
	}
	info := &gossip.ClusterInfo{Members: []*gossip.MemberInfo{self}}
	if s.leader != nil {
		self.State = gossip.MemberInfo_Follower
		leader, err := (&gossipServer{Server: s.leader}).Read(context.Background(), nil)
		if err != nil {
			return nil, err
		}
		id[0] = 1
		leader.Members[0].InstanceId = toUUID(id, true)
		info.Members = append(info.Members, leader.Members[0])
	}
	return info, nil
}

// Authentication: KurrentDB answers a wrong password with UNAUTHENTICATED and a
// missing one, where access needs a user, with PERMISSION_DENIED.
func (s *Server) authorize(ctx context.Context, method string) error {
	if len(s.opts.Users) == 0 || strings.HasPrefix(method, "/event_store.client.server_features.") ||
		strings.HasPrefix(method, "/event_store.client.gossip.") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	h := md.Get("authorization")
	if len(h) == 0 {
		return status.Error(codes.PermissionDenied, "access denied")
	}
	raw, ok := strings.CutPrefix(h[0], "Basic ")
	if !ok {
		return status.Error(codes.Unauthenticated, "bad authorization header")
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return status.Error(codes.Unauthenticated, "bad authorization header")
	}
	user, pass, _ := strings.Cut(string(b), ":")
	want, ok := s.opts.Users[user]
	if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
		return status.Error(codes.Unauthenticated, "bad credentials")
	}
	return nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if md := s.notLeaderTrailer(ctx, info.FullMethod); md != nil {
		grpc.SetTrailer(ctx, md)
		return nil, status.Error(codes.NotFound, "leader info available")
	}
	return h(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		if info.IsClientStream {
			// Take what the client sends before refusing it: a status sent
			// while the client still writes reaches it as a bare EOF from its
			// Send, and the client then reports no error code at all.
			for range maxDrained {
				if ss.RecvMsg(new(emptypb.Empty)) != nil {
					break
				}
			}
		}
		return err
	}
	if md := s.notLeaderTrailer(ss.Context(), info.FullMethod); md != nil {
		ss.SetTrailer(md)
		return status.Error(codes.NotFound, "leader info available")
	}
	return h(srv, ss)
}

// maxDrained bounds the messages a refused client stream is read for.
const maxDrained = 1 << 16

// notLeaderTrailer counts a streams RPC and, on a follower, returns the
// trailers that redirect one requiring the leader.
func (s *Server) notLeaderTrailer(ctx context.Context, method string) metadata.MD {
	if strings.HasPrefix(method, "/event_store.client.server_features.") || strings.HasPrefix(method, "/event_store.client.gossip.") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	required := len(md.Get("requires-leader")) > 0 && md.Get("requires-leader")[0] == "true"
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if required {
		s.leaderRequests++
	}
	if s.leader == nil || !required {
		return nil
	}
	s.notLeader++
	host, port, _ := net.SplitHostPort(s.leader.Addr())
	return metadata.Pairs("exception", "not-leader", "leader-endpoint-host", host, "leader-endpoint-port", port)
}

// trackingListener remembers accepted connections so they can be cut.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// newCertificates returns a server certificate for localhost, 127.0.0.1 and ::1
// signed by a new certificate authority, and that authority as PEM. Nothing but
// the authority's certificate ever leaves memory.
func newCertificates() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kurrenttest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}
