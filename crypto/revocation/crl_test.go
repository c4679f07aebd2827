package revocation

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustBig(s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 0)
	if !ok {
		panic(s)
	}
	return n
}

// roundTripEntries covers serial encodings (high bit set, zero, 20 and 21
// octets), every reason, and times on both sides of the UTCTime range.
func roundTripEntries() []Entry {
	t0 := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	serials := []*big.Int{
		big.NewInt(0), big.NewInt(1), big.NewInt(0x7f), big.NewInt(0x80), big.NewInt(0xff),
		big.NewInt(0x100), big.NewInt(0x8000), mustBig("0x7fffffffffffffff"), mustBig("0x8000000000000000"),
		mustBig("0xffffffffffffffffffffffffffffffffffffffff"), // 20 octets, high bit set: 21 encoded
		mustBig("0x7f00000000000000000000000000000000000001"), // 20 octets encoded
	}
	var es []Entry
	for i, s := range serials {
		es = append(es, Entry{Serial: s, RevokedAt: t0.Add(time.Duration(i) * time.Second), Reason: 1})
	}
	for r := 0; r <= 10; r++ {
		if r == 7 {
			continue
		}
		es = append(es, Entry{Serial: big.NewInt(int64(1000 + r)), RevokedAt: t0, Reason: r})
	}
	dates := []time.Time{
		time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2099, 2, 3, 4, 5, 6, 0, time.UTC),
		time.Date(2024, 2, 29, 12, 0, 0, 999_999_999, time.FixedZone("CEST", 2*3600)), // sub-second, not UTC
	}
	for i, d := range dates {
		es = append(es, Entry{Serial: big.NewInt(int64(2000 + i)), RevokedAt: d})
	}
	return es
}

func TestBuildCRLRoundTrip(t *testing.T) {
	entries := roundTripEntries()
	for _, kt := range keyTypes {
		for _, dates := range []struct {
			name       string
			this, next time.Time
		}{
			{"utctime", time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC), time.Date(2030, 1, 9, 3, 4, 5, 0, time.UTC)},
			{"across2050", time.Date(2049, 12, 31, 12, 0, 0, 0, time.UTC), time.Date(2050, 1, 7, 12, 0, 0, 0, time.UTC)},
			{"generalized", time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC), time.Date(2051, 1, 9, 3, 4, 5, 0, time.UTC)},
		} {
			t.Run(kt.name+"/"+dates.name, func(t *testing.T) {
				ca := newTestCA(t, kt.new(), "CRL CA "+kt.name)
				number := mustBig("0x00ffeeddccbbaa99887766554433221100112233") // 20 octets with its leading zero
				der, err := BuildCRL(t.Context(), ca.cert, ca.key, CRL{Number: number, ThisUpdate: dates.this, NextUpdate: dates.next, Entries: entries})
				if err != nil {
					t.Fatal(err)
				}
				rl, err := x509.ParseRevocationList(der)
				if err != nil {
					t.Fatal(err)
				}
				if err := rl.CheckSignatureFrom(ca.cert); err != nil {
					t.Fatalf("CheckSignatureFrom: %v", err)
				}
				if rl.Number.Cmp(number) != 0 {
					t.Errorf("number %v, want %v", rl.Number, number)
				}
				if !rl.ThisUpdate.Equal(dates.this.Truncate(time.Second)) || !rl.NextUpdate.Equal(dates.next.Truncate(time.Second)) {
					t.Errorf("this/next %v %v, want %v %v", rl.ThisUpdate, rl.NextUpdate, dates.this, dates.next)
				}
				if !bytes.Equal(rl.AuthorityKeyId, ca.cert.SubjectKeyId) {
					t.Errorf("AKI %x, want %x", rl.AuthorityKeyId, ca.cert.SubjectKeyId)
				}
				if !bytes.Equal(rl.RawIssuer, ca.cert.RawSubject) {
					t.Error("issuer differs from the CA subject")
				}
				if rl.SignatureAlgorithm != ca.sigAlgorithm() {
					t.Errorf("signature algorithm %v, want %v", rl.SignatureAlgorithm, ca.sigAlgorithm())
				}
				checkEntries(t, rl, entries)
			})
		}
	}
}

func checkEntries(t *testing.T, rl *x509.RevocationList, want []Entry) {
	t.Helper()
	if len(rl.RevokedCertificateEntries) != len(want) {
		t.Fatalf("%d entries, want %d", len(rl.RevokedCertificateEntries), len(want))
	}
	for i, got := range rl.RevokedCertificateEntries {
		w := want[i]
		if got.SerialNumber.Cmp(w.Serial) != 0 {
			t.Errorf("entry %d: serial %x, want %x", i, got.SerialNumber, w.Serial)
		}
		if wt := w.RevokedAt.UTC().Truncate(time.Second); !got.RevocationTime.Equal(wt) {
			t.Errorf("entry %d: time %v, want %v", i, got.RevocationTime, wt)
		}
		if got.ReasonCode != w.Reason {
			t.Errorf("entry %d: reason %d, want %d", i, got.ReasonCode, w.Reason)
		}
		if w.Reason == 0 && len(got.Extensions) != 0 {
			t.Errorf("entry %d: reason 0 has extensions %v; want none", i, got.Extensions)
		}
	}
}

// TestBuildCRLMatchesStdlib holds the hand-written TBSCertList byte-for-byte
// equal to the one x509.CreateRevocationList encodes for the same content.
func TestBuildCRLMatchesStdlib(t *testing.T) {
	for _, kt := range keyTypes {
		for _, n := range []int{0, 1, -1} {
			entries := roundTripEntries()
			if n >= 0 {
				entries = entries[:n]
			}
			t.Run(fmt.Sprintf("%s/%d", kt.name, len(entries)), func(t *testing.T) {
				ca := newTestCA(t, kt.new(), "CRL CA")
				c := CRL{
					Number:     big.NewInt(4711),
					ThisUpdate: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
					NextUpdate: time.Date(2030, 1, 3, 3, 4, 5, 0, time.UTC),
					Entries:    entries,
				}
				der, err := BuildCRL(t.Context(), ca.cert, ca.key, c)
				if err != nil {
					t.Fatal(err)
				}
				tmpl := &x509.RevocationList{Number: c.Number, ThisUpdate: c.ThisUpdate, NextUpdate: c.NextUpdate}
				for _, e := range entries {
					tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
						x509.RevocationListEntry{SerialNumber: e.Serial, RevocationTime: e.RevokedAt, ReasonCode: e.Reason})
				}
				stdDER, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
				if err != nil {
					t.Fatal(err)
				}
				ours, err := x509.ParseRevocationList(der)
				if err != nil {
					t.Fatal(err)
				}
				std, err := x509.ParseRevocationList(stdDER)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ours.RawTBSRevocationList, std.RawTBSRevocationList) {
					t.Fatalf("TBSCertList differs from the standard library's:\nours %x\nstd  %x", ours.RawTBSRevocationList, std.RawTBSRevocationList)
				}
				// Equal bytes parse equal; compare the fields anyway, for the reader.
				if ours.Number.Cmp(std.Number) != 0 || !ours.ThisUpdate.Equal(std.ThisUpdate) || !ours.NextUpdate.Equal(std.NextUpdate) ||
					ours.SignatureAlgorithm != std.SignatureAlgorithm || len(ours.Extensions) != len(std.Extensions) {
					t.Error("fields differ from the standard library's")
				}
				checkEntries(t, std, entries)
			})
		}
	}
}

func TestAppendTime(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC), "\x18\x0f19491231235959Z"},
		{time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), "\x17\x0d500101000000Z"},
		{time.Date(2000, 2, 29, 1, 2, 3, 500, time.UTC), "\x17\x0d000229010203Z"},
		{time.Date(2049, 12, 31, 23, 59, 59, 999, time.UTC), "\x17\x0d491231235959Z"},
		{time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), "\x18\x0f20500101000000Z"},
		{time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "\x18\x0f99991231235959Z"},
		{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Second), "\x18\x0f00010101000001Z"},
	} {
		got := appendTime(nil, tc.t)
		if string(got) != tc.want || len(got) != timeLen(tc.t) {
			t.Errorf("appendTime(%v) = %q (timeLen %d), want %q", tc.t, got, timeLen(tc.t), tc.want)
		}
	}
}

func TestAppendHeaderLengths(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<24 - 1, 1 << 24, 1<<31 - 1} {
		h := appendHeader(nil, tagSequence, n)
		if len(h) != tlvLen(n)-n {
			t.Errorf("header of %d is %d bytes, tlvLen says %d", n, len(h), tlvLen(n)-n)
		}
		// Minimal form: short for < 128, otherwise no leading zero length octet.
		if n >= 128 && h[2] == 0 {
			t.Errorf("length %d has a leading zero octet: %x", n, h)
		}
	}
}

func TestBuildCRLInvalid(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	other := newTestCA(t, newP256(t), "Other")
	noCRLSign := newTestCAWith(t, newP256(t), "No cRLSign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign })
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024 := newTestCA(t, smallRSA, "RSA 1024")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	good := func() CRL {
		return CRL{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
			Entries: []Entry{{Serial: big.NewInt(5), RevokedAt: now, Reason: 1}}}
	}
	noSKI := *ca.cert
	noSKI.SubjectKeyId = nil
	for _, tc := range []struct {
		name   string
		issuer *x509.Certificate
		key    crypto.Signer
		edit   func(*CRL)
	}{
		{"nil serial", ca.cert, ca.key, func(c *CRL) { c.Entries[0].Serial = nil }},
		{"negative serial", ca.cert, ca.key, func(c *CRL) { c.Entries[0].Serial = big.NewInt(-5) }},
		{"reason 7", ca.cert, ca.key, func(c *CRL) { c.Entries[0].Reason = 7 }},
		{"reason 11", ca.cert, ca.key, func(c *CRL) { c.Entries[0].Reason = 11 }},
		{"reason -1", ca.cert, ca.key, func(c *CRL) { c.Entries[0].Reason = -1 }},
		{"zero revocation time", ca.cert, ca.key, func(c *CRL) { c.Entries[0].RevokedAt = time.Time{} }},
		{"revocation year 10000", ca.cert, ca.key, func(c *CRL) { c.Entries[0].RevokedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"nil number", ca.cert, ca.key, func(c *CRL) { c.Number = nil }},
		{"negative number", ca.cert, ca.key, func(c *CRL) { c.Number = big.NewInt(-1) }},
		{"21-octet number", ca.cert, ca.key, func(c *CRL) { c.Number = mustBig("0x8000000000000000000000000000000000000000") }},
		{"zero thisUpdate", ca.cert, ca.key, func(c *CRL) { c.ThisUpdate = time.Time{} }},
		{"zero nextUpdate", ca.cert, ca.key, func(c *CRL) { c.NextUpdate = time.Time{} }},
		{"nextUpdate before thisUpdate", ca.cert, ca.key, func(c *CRL) { c.NextUpdate = now.Add(-time.Hour) }},
		{"nextUpdate within the same second", ca.cert, ca.key, func(c *CRL) { c.NextUpdate = now.Add(time.Millisecond) }},
		{"key of another CA", ca.cert, other.key, func(*CRL) {}},
		{"nil key", ca.cert, nil, func(*CRL) {}},
		{"nil issuer", nil, ca.key, func(*CRL) {}},
		{"issuer without cRLSign", noCRLSign.cert, noCRLSign.key, func(*CRL) {}},
		{"issuer without SKI", &noSKI, ca.key, func(*CRL) {}},
		{"RSA 1024", rsa1024.cert, rsa1024.key, func(*CRL) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			der, err := BuildCRL(t.Context(), tc.issuer, tc.key, c)
			if !errors.Is(err, ErrInvalid) || der != nil {
				t.Fatalf("BuildCRL = %d bytes, %v; want ErrInvalid", len(der), err)
			}
		})
	}
}

func TestBuildCRLCanceled(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	now := time.Now()
	_, err := BuildCRL(ctx, ca.cert, ca.key, CRL{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		Entries: []Entry{{Serial: big.NewInt(1), RevokedAt: now}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// badSigner signs with a key other than the one it claims.
type badSigner struct {
	crypto.Signer
	claimed crypto.PublicKey
}

func (s badSigner) Public() crypto.PublicKey { return s.claimed }

func TestBuildCRLRejectsBadSignature(t *testing.T) {
	ca := newTestCA(t, newP256(t), "CA")
	now := time.Now()
	_, err := BuildCRL(t.Context(), ca.cert, badSigner{newP256(t), ca.key.Public()},
		CRL{Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
	if err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("err = %v, want a signature verification failure", err)
	}
}

// TestBuildCRLOpenSSL has OpenSSL verify and print a CRL.
func TestBuildCRLOpenSSL(t *testing.T) {
	openssl := requireOpenSSL(t)
	for _, kt := range keyTypes {
		t.Run(kt.name, func(t *testing.T) {
			ca := newTestCA(t, kt.new(), "OpenSSL CRL CA")
			dir := t.TempDir()
			caPEM := ca.writePEM(t, dir, "ca.pem")
			now := time.Now()
			serial := mustBig("0x8a1b2c3d4e5f60718293a4b5c6d7e8f901020304")
			entries := []Entry{
				{Serial: big.NewInt(0x1234), RevokedAt: now.Add(-time.Hour)},
				{Serial: serial, RevokedAt: now.Add(-time.Minute), Reason: 1},
				{Serial: big.NewInt(99), RevokedAt: time.Date(2051, 1, 1, 0, 0, 0, 0, time.UTC), Reason: 6},
			}
			der, err := BuildCRL(t.Context(), ca.cert, ca.key, CRL{Number: big.NewInt(7), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour), Entries: entries})
			if err != nil {
				t.Fatal(err)
			}
			crlPath := filepath.Join(dir, "crl.der")
			if err := os.WriteFile(crlPath, der, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), openssl, "crl", "-inform", "DER", "-in", crlPath, "-noout", "-text", "-CAfile", caPEM).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl crl: %v\n%s", err, out)
			}
			text := string(out)
			for _, want := range []string{
				"verify OK",
				"Serial Number: " + strings.ToUpper(serial.Text(16)),
				"Serial Number: 1234",
				"Key Compromise",
				"Certificate Hold",
				"X509v3 CRL Number:",
				"X509v3 Authority Key Identifier:",
				"Revocation Date: Jan  1 00:00:00 2051 GMT",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("openssl output lacks %q:\n%s", want, text)
				}
			}
		})
	}
}

// requireOpenSSL returns the openssl binary; its absence fails the test
// (OpenSSL is the interoperability peer, not an optional extra).
func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl is required for this interoperability test: %v", err)
	}
	return p
}
