package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/caledger/caledger/crypto/issuer"
	"github.com/caledger/caledger/crypto/signer"
	"github.com/caledger/caledger/domain"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// initActor is recorded as the actor of what init does: no client is
// authenticated yet.
var initActor = domain.Actor{ID: "caledger-init", Role: "admin"}

func runInit(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	dataDir := fs.String("data", envOr(env, "CALEDGER_DATA", "./data"), "data `directory`; env CALEDGER_DATA")
	ifNeeded := fs.Bool("if-needed", false, "do nothing if DIR is already initialised")
	org := fs.String("organization", "caledger", "`name` of the organisation in the CA certificates")
	baseURL := fs.String("base-url", "http://localhost:8080", "`URL` of serve's plain-HTTP publication listener (--public-addr), where relying parties fetch CRLs, OCSP and CA certificates; written into every certificate")
	provider := fs.String("key-provider", "software", "where CA keys are made: software (DIR/keys/ca, wrapped by the KEK) or pkcs11")
	p11lib := fs.String("pkcs11-library", "", "PKCS#11 module `path` (key provider pkcs11)")
	p11token := fs.String("pkcs11-token", "", "PKCS#11 token `label` (key provider pkcs11); the PIN comes from env CALEDGER_PKCS11_PIN")
	kekProvider := fs.String("kek-provider", "file", "where the KEK that wraps the vault's data keys and the software CA keys lives: file (DIR/keys/kek.json) or pkcs11 (an AES key on a token, which never leaves it)")
	kekLib := fs.String("kek-pkcs11-library", "", "PKCS#11 module `path` of the KEK (KEK provider pkcs11); default: --pkcs11-library")
	kekToken := fs.String("kek-pkcs11-token", "", "PKCS#11 token `label` of the KEK (KEK provider pkcs11); default: --pkcs11-token; the PIN comes from env "+kekPINEnv)
	kekLabel := fs.String("kek-pkcs11-label", "caledger-kek", "base `label` of the KEK's key on the token (KEK provider pkcs11): each KEK epoch's key is labelled BASE@ and eight random hex digits")
	retain := fs.Bool("retain-until-expiry", false, "CA policy: certificates may be deleted only once expired")
	store := fs.String("store", envOr(env, "CALEDGER_STORE", "sqlite"), "ledger `backend`: sqlite (embedded, in DIR/ledger) or kurrent (the KurrentDB cluster KURRENTDB_URL names); env CALEDGER_STORE")
	hosts := fs.String("server-names", "localhost,127.0.0.1,::1", "comma-separated DNS names and IP addresses of the server's TLS certificate")
	setUsage(fs, "init [--data DIR] [flags]", `Create a root CA and an issuing CA, recorded in the ledger, a TLS
certificate for the server and a credential for the first officer (role
admin), written to DIR/admin as PEM and PKCS#12.`)
	if help, err := parseFlags(fs, args, stdout); help || err != nil {
		return err
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		if *ifNeeded {
			return nil
		}
		return fmt.Errorf("%s is already initialised", dir)
	}
	// Everything that can be checked is checked before anything is generated
	// or recorded.
	names, ips := splitHosts(*hosts)
	if names == "" && ips == "" {
		return &usageError{msg: "init: --server-names is empty"}
	}
	// The server certificate is issued under the built-in tls-server profile;
	// its own checks judge the names, one at a time to say which is wrong.
	profiles := issuer.DefaultProfiles()
	i := slices.IndexFunc(profiles, func(p issuer.Profile) bool { return p.Name == "tls-server" })
	if i < 0 {
		return errors.New("init: the built-in profiles lack tls-server")
	}
	serverProfile := profiles[i]
	for _, name := range splitComma(names) {
		if err := issuer.CheckSubject(serverProfile, map[string]string{"common_name": serverCommonName, "dns_names": name}); err != nil {
			return &usageError{msg: fmt.Sprintf("init: --server-names: %q is not an IP address, and the tls-server profile refuses it as a DNS name (%v)", name, err)}
		}
	}
	serverAttrs := map[string]string{"common_name": serverCommonName}
	if names != "" {
		serverAttrs["dns_names"] = names
	}
	if ips != "" {
		serverAttrs["ip_addresses"] = ips
	}
	if err := issuer.CheckSubject(serverProfile, serverAttrs); err != nil {
		return &usageError{msg: fmt.Sprintf("init: --server-names: %v", err)}
	}
	if *provider != "software" && *provider != "pkcs11" {
		return &usageError{msg: fmt.Sprintf("init: unknown key provider %q (known: software, pkcs11)", *provider)}
	}
	cfg := config{Store: *store, CAs: []string{"root", "issuing"}, DefaultIssuer: "issuing", BaseURL: *baseURL, KeyProvider: *provider}
	if *provider == "pkcs11" {
		cfg.PKCS11 = &pkcs11Options{Library: *p11lib, Token: *p11token}
	}
	switch *kekProvider {
	case "file":
		cfg.KEK = &kekOptions{Provider: "file"}
	case "pkcs11":
		o := kekOptions{Provider: "pkcs11", Library: *kekLib, Token: *kekToken}
		if o.Library == "" {
			o.Library = *p11lib
		}
		if o.Token == "" {
			o.Token = *p11token
		}
		if o.Library == "" || o.Token == "" {
			return &usageError{msg: "init: KEK provider pkcs11 needs --kek-pkcs11-library and --kek-pkcs11-token (or --pkcs11-library and --pkcs11-token)"}
		}
		if *kekLabel == "" || strings.Contains(*kekLabel, "@") {
			return &usageError{msg: "init: --kek-pkcs11-label must be a non-empty label without '@'"}
		}
		if env(kekPINEnv) == "" {
			return &usageError{msg: "init: KEK provider pkcs11: set " + kekPINEnv + " to the token's user PIN"}
		}
		if o.Label, err = newKEKLabel(*kekLabel); err != nil {
			return err
		}
		cfg.KEK = &o
	default:
		return &usageError{msg: fmt.Sprintf("init: unknown KEK provider %q (known: file, pkcs11)", *kekProvider)}
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	n, err := openNodeFor(ctx, cfg, dir, logger, env, true)
	if err != nil {
		return err
	}
	// Deferred before n.close, so it runs after it.
	defer func() {
		if err != nil {
			err = errors.Join(err, discardInitKEK(ctx, dir, cfg, env))
		}
	}()
	defer n.close()
	if _, err := n.handlers.LoadCA(ctx, "root"); err == nil {
		return fmt.Errorf("%s holds CAs from an init that did not finish (%s is missing); remove the directory and run init again", dir, configFile)
	}
	if err := n.openKeys(ctx, cfg, env); err != nil {
		return err
	}
	if err := createCAs(ctx, n, cfg, *org, *retain); err != nil {
		return err
	}
	if err := n.loadCAs(ctx, cfg, env); err != nil {
		return err
	}
	rootCA, _ := n.cas.CA("root")
	if err := writePEM(filepath.Join(dir, rootPEM), 0o644, rootCA.Certificate.Raw); err != nil {
		return err
	}
	if _, err := issueCredential(ctx, n, serverAttrs, "tls-server", filepath.Join(dir, tlsCertFile), filepath.Join(dir, tlsKeyFile), ""); err != nil {
		return fmt.Errorf("server TLS certificate: %w", err)
	}
	cred, err := issueCredential(ctx, n, map[string]string{"common_name": "caledger admin"}, "admin",
		filepath.Join(dir, adminDir, "admin.pem"), filepath.Join(dir, adminDir, "admin-key.pem"), filepath.Join(dir, adminDir, "admin.p12"))
	if err != nil {
		return fmt.Errorf("admin credential: %w", err)
	}
	if err := writeConfig(dir, cfg); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `initialised %s
  root CA certificate:  %s
  server certificate:   %s
  admin credential:     %s (key %s)
                        %s (PKCS#12, password in %s)
`, dir, filepath.Join(dir, rootPEM), filepath.Join(dir, tlsCertFile), cred.cert, cred.key, cred.p12, cred.p12+".password")
	return nil
}

// createCAs makes the root and issuing CAs' keys and certificates and records
// them in the ledger.
func createCAs(ctx context.Context, n *node, cfg config, org string, retain bool) error {
	p := n.keys[providerName(cfg)]
	now := time.Now()
	label := func(id string) string {
		var b [4]byte
		_, _ = rand.Read(b[:])
		return id + "-" + now.UTC().Format("20060102") + "-" + hex.EncodeToString(b[:])
	}
	rootKey, rootRef, err := p.Generate(ctx, label("root"), signer.P384)
	if err != nil {
		return fmt.Errorf("root CA key: %w", err)
	}
	rootCert, err := issuer.NewRoot(ctx, rootKey, pkix.Name{Organization: []string{org}, CommonName: org + " Root CA"}, 20*365*24*time.Hour, randomSerial(), now)
	if err != nil {
		return fmt.Errorf("root CA certificate: %w", err)
	}
	if err := n.handlers.CreateCA(ctx, initActor, domain.CACreated{CAID: "root", Kind: domain.CAKindRoot, Certificate: rootCert.Raw,
		Key: caKey(rootRef), RetainUntilExpiry: retain}); err != nil {
		return err
	}
	issKey, issRef, err := p.Generate(ctx, label("issuing"), signer.P256)
	if err != nil {
		return fmt.Errorf("issuing CA key: %w", err)
	}
	issCert, err := issuer.NewIntermediate(ctx, issuer.CA{ID: "root", Certificate: rootCert, Key: rootKey}, issKey.Public(),
		pkix.Name{Organization: []string{org}, CommonName: org + " Issuing CA"}, 5*365*24*time.Hour, randomSerial(), now,
		issuer.Options{BaseURL: cfg.BaseURL})
	if err != nil {
		return fmt.Errorf("issuing CA certificate: %w", err)
	}
	return n.handlers.CreateCA(ctx, initActor, domain.CACreated{CAID: "issuing", Kind: domain.CAKindIssuing, ParentID: "root",
		Certificate: issCert.Raw, Key: caKey(issRef), RetainUntilExpiry: retain})
}

func providerName(cfg config) string {
	if cfg.KeyProvider == "" {
		return "software"
	}
	return cfg.KeyProvider
}

func caKey(r signer.Ref) domain.CAKey {
	return domain.CAKey{Provider: r.Provider, Label: r.Label, Algorithm: string(r.Algorithm)}
}

func randomSerial() *big.Int {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[0] &= 0x7f
	b[0] |= 0x01 // positive and never zero
	return new(big.Int).SetBytes(b[:])
}

type credentialFiles struct {
	cert, key, p12 string
	serial         domain.Serial
	subject        domain.SubjectID
}

// issueCredential registers a subject with attrs, makes a P-256 key, has the
// issuing CA certify it under profile, and writes the chain (PEM), the key
// (PKCS#8 PEM, 0600) and, when p12Path is set, a PKCS#12 file with a random
// password beside it (p12Path + ".password", 0600). The files are written only
// once the issuance is durable.
func issueCredential(ctx context.Context, n *node, attrs map[string]string, profile, certPath, keyPath, p12Path string) (credentialFiles, error) {
	out := credentialFiles{cert: certPath, key: keyPath, p12: p12Path}
	for _, p := range []string{certPath, keyPath, p12Path} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return out, fmt.Errorf("%s exists: a credential is never written over another", p)
		}
	}
	id, err := n.handlers.RegisterSubject(ctx, initActor, attrs)
	if err != nil {
		return out, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return out, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return out, err
	}
	issued, err := n.handlers.IssueCertificate(ctx, initActor, domain.IssueRequest{SubjectID: id, CAID: n.cas.DefaultIssuer(), Profile: profile, CSR: csr})
	if err != nil {
		return out, err
	}
	out.serial, out.subject = issued.Serial, id
	leaf, err := x509.ParseCertificate(issued.Certificate)
	if err != nil {
		return out, err
	}
	ca, _ := n.cas.CA(issued.CAID)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return out, err
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return out, err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600); err != nil {
		return out, err
	}
	if err := writePEM(certPath, 0o644, leaf.Raw, ca.Certificate.Raw); err != nil {
		return out, err
	}
	if p12Path == "" {
		return out, nil
	}
	var pw [12]byte
	_, _ = rand.Read(pw[:])
	password := hex.EncodeToString(pw[:])
	p12, err := pkcs12.Modern.Encode(key, leaf, []*x509.Certificate{ca.Certificate}, password)
	if err != nil {
		return out, err
	}
	if err := writeFileAtomic(p12Path, p12, 0o600); err != nil {
		return out, err
	}
	return out, writeFileAtomic(p12Path+".password", []byte(password+"\n"), 0o600)
}

// writePEM writes the DER certificates as one PEM file.
func writePEM(path string, perm fs.FileMode, ders ...[]byte) error {
	var b []byte
	for _, der := range ders {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeFileAtomic(path, b, perm)
}

// serverCommonName is the common name of the server's TLS certificate.
const serverCommonName = "caledger server"

// splitHosts splits a comma-separated list into DNS names and IP addresses.
func splitHosts(list string) (names, ips string) {
	add := func(s *string, v string) {
		if *s != "" {
			*s += ","
		}
		*s += v
	}
	for _, h := range splitComma(list) {
		if isIP(h) {
			add(&ips, h)
		} else {
			add(&names, h)
		}
	}
	return names, ips
}

func splitComma(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
