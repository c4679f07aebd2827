// Package witnesstest starts a real C2SP tlog-witness for tests: litewitness
// (filippo.io/torchwood/cmd/litewitness, an implementation the project does not
// control), with its Ed25519 key in a private OpenSSH ssh-agent and its SQLite
// database in the test's temporary directory, listening on a free loopback
// port. Logs are added to it as its witnessctl tool adds them: rows in its
// database.
//
// A test fails, never skips, when litewitness or OpenSSH is missing: make test
// installs litewitness into bin/ and the Debian package openssh-client.
package witnesstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the witness's database, as witnessctl writes it
)

// Witness is one running litewitness.
type Witness struct {
	// URL is its submission prefix, http://127.0.0.1:<port>.
	URL string
	// Name is the witness's name; VKey its verifier key, as it reports it.
	Name, VKey string

	t      testing.TB
	dir    string
	bin    string
	agent  string // the ssh-agent socket
	fp     string // the key's SHA256 fingerprint
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncBuffer
}

// Start starts a witness named name. It stops when the test ends.
func Start(t testing.TB, name string) *Witness {
	t.Helper()
	bin := findLitewitness(t)
	for _, tool := range []string{"ssh-agent", "ssh-add", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Debian package openssh-client; make test installs it): %v", tool, err)
		}
	}
	// A short directory: a Unix socket's path is limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "witness")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	w := &Witness{t: t, dir: dir, bin: bin, Name: name, agent: filepath.Join(dir, "agent.sock")}

	key := filepath.Join(dir, "key")
	run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key)
	fp := strings.Fields(run(t, nil, "ssh-keygen", "-l", "-E", "sha256", "-f", key+".pub"))
	if len(fp) < 2 || !strings.HasPrefix(fp[1], "SHA256:") {
		t.Fatalf("ssh-keygen -l printed %q", fp)
	}
	w.fp = fp[1]
	agent := exec.Command("ssh-agent", "-D", "-a", w.agent)
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	waitFor(t, "ssh-agent's socket", func() bool { _, err := os.Stat(w.agent); return err == nil })
	run(t, []string{"SSH_AUTH_SOCK=" + w.agent}, "ssh-add", "-q", key)

	w.addr = freeAddr(t)
	w.URL = "http://" + w.addr
	t.Cleanup(w.Stop) // first: a start that fails stops the process too
	w.start()
	// litewitness logs its verifier key once it has its signer.
	re := regexp.MustCompile(`vkey=("(?:[^"\\]|\\.)*"|\S+)`)
	waitFor(t, "litewitness's verifier key", func() bool { return re.Match(w.out.Bytes()) })
	v := re.FindSubmatch(w.out.Bytes())[1]
	w.VKey = string(v)
	if v[0] == '"' {
		if w.VKey, err = strconv.Unquote(string(v)); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// start runs litewitness on w's address and waits until it answers.
func (w *Witness) start() {
	t := w.t
	w.out = &syncBuffer{}
	w.cmd = exec.Command(w.bin, "-name", w.Name, "-db", filepath.Join(w.dir, "witness.db"),
		"-ssh-agent", w.agent, "-key", w.fp, "-listen", w.addr)
	w.cmd.Stdout, w.cmd.Stderr = w.out, w.out
	if err := w.cmd.Start(); err != nil {
		w.cmd = nil
		t.Fatal(err)
	}
	w.exited = make(chan struct{})
	go func() { _ = w.cmd.Wait(); close(w.exited) }()
	waitFor(t, "litewitness to listen", func() bool {
		select {
		case <-w.exited:
			t.Fatalf("litewitness exited:\n%s", w.out.Bytes())
		default:
		}
		resp, err := http.Get(w.URL + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}

// Stop stops the witness (a witness that is down); Restart starts it again
// with the same key and database.
func (w *Witness) Stop() {
	if w.cmd == nil {
		return
	}
	_ = w.cmd.Process.Kill()
	<-w.exited
	w.cmd = nil
}

// Restart starts a stopped witness again.
func (w *Witness) Restart() { w.start() }

// AddLog makes the witness accept checkpoints of the log origin signed with
// the note verifier key vkey, starting from an empty log, as witnessctl
// add-log and add-key do.
func (w *Witness) AddLog(origin, vkey string) {
	w.t.Helper()
	empty := sha256.Sum256(nil)
	w.exec("INSERT INTO log (origin, tree_size, tree_hash) VALUES (?, 0, ?)", origin, base64.StdEncoding.EncodeToString(empty[:]))
	w.exec("INSERT INTO key (origin, key) VALUES (?, ?)", origin, vkey)
}

// Size is the size of the last checkpoint of origin the witness cosigned.
func (w *Witness) Size(origin string) uint64 {
	w.t.Helper()
	db := w.db()
	defer db.Close()
	var size uint64
	if err := db.QueryRow("SELECT tree_size FROM log WHERE origin = ?", origin).Scan(&size); err != nil {
		w.t.Fatal(err)
	}
	return size
}

// Output is what litewitness logged.
func (w *Witness) Output() string { return string(w.out.Bytes()) }

func (w *Witness) exec(query string, args ...any) {
	w.t.Helper()
	db := w.db()
	defer db.Close()
	if _, err := db.Exec(query, args...); err != nil {
		w.t.Fatal(err)
	}
}

func (w *Witness) db() *sql.DB {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(w.dir, "witness.db")+"?_busy_timeout=5000&_foreign_keys=1")
	if err != nil {
		w.t.Fatal(err)
	}
	return db
}

// findLitewitness looks in the module's bin/, where make test installs the
// pinned version, then on PATH.
func findLitewitness(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			dir = ""
			break
		}
		dir = parent
	}
	if dir != "" {
		if p := filepath.Join(dir, "bin", "litewitness"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("litewitness"); err == nil {
		return p
	}
	t.Fatal("litewitness is not installed: run make test, which installs it into bin/")
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(errors.New("timed out waiting for " + what))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}
