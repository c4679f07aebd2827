package sqlite_test

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/eventstore/storetest"
)

// The crash test runs this test binary again as a child that appends in a loop
// and prints one line per acknowledged append; the parent kills it with SIGKILL
// at a random moment, reopens the store and checks that every acknowledged event
// is there, exactly once, with no gaps and no torn appends. Then it starts the next
// child on the same directory.

const (
	crashDirEnv = "CALEDGER_CRASH_CHILD_DIR"
	crashRunEnv = "CALEDGER_CRASH_CHILD_RUN"
	crashKills  = 25
)

// crashPayload is the public part of every event the child writes. An append of n
// events writes n payloads with the same Append id, so torn appends show.
type crashPayload struct {
	Append string `json:"append"`
	Index  int    `json:"index"`
	Count  int    `json:"count"`
	Pad    string `json:"pad"`
}

// TestMain runs the crash test's child when the environment asks for one.
func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir, os.Getenv(crashRunEnv))
		return
	}
	os.Exit(m.Run())
}

// crashOptions flush the stream index often, and keep the commit log files small,
// so that kills also land in the middle of index flushes and of turns from one log
// file to the other (which wait for the drainer). The parent recovers with the
// same options.
var crashOptions = sqlite.Options{IndexFlushInterval: 20 * time.Millisecond, IndexFlushEntries: 500, LogFileBytes: 256 << 10}

func crashChild(dir, run string) {
	s, err := sqlite.Open(context.Background(), dir, crashOptions)
	if err != nil {
		fmt.Println("open-error", err)
		os.Exit(3)
	}
	var out sync.Mutex
	fmt.Println("ready")
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pad := strings.Repeat("x", 900)
			if g == 1 {
				// 30 KiB events: this goroutine's appends of two and three events
				// span chunks, so their commits are several log records, which a
				// kill could tear apart.
				pad = strings.Repeat("y", 30<<10)
			}
			for n := 0; ; n++ {
				count := 1 + n%3
				id := fmt.Sprintf("%s-%d-%d", run, g, n)
				events := make([]domain.Event, count)
				for i := range events {
					p, _ := json.Marshal(crashPayload{Append: id, Index: i, Count: count, Pad: pad})
					eid, err := domain.NewEventID(crand.Reader)
					if err != nil {
						panic(err)
					}
					events[i] = domain.Event{ID: eid, Type: "crash.test", Schema: 1, Time: time.Now(), Public: p}
				}
				stream := fmt.Sprintf("w-%d", g)
				if g%4 == 0 {
					stream = "cert-" + id // a new stream per append, as issuance does
				}
				a, err := s.Append(context.Background(), stream, domain.Any, events...)
				if err != nil {
					fmt.Println("append-error", err)
					os.Exit(4)
				}
				// One short write per line: a kill cannot tear it.
				ids := make([]string, count)
				for i, e := range events {
					ids[i] = e.ID.String()
				}
				line := fmt.Sprintf("ack %s %d %d %d %s\n", stream, a.FirstPosition, a.LastPosition, a.Version, strings.Join(ids, ","))
				out.Lock()
				os.Stdout.WriteString(line)
				out.Unlock()
			}
		}()
	}
	wg.Wait()
}

type ack struct {
	stream         string
	first, last, v uint64
	ids            []string
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var acks []ack
	for run := range crashKills {
		acks = append(acks, runAndKill(t, dir, run, time.Duration(20+rng.IntN(180))*time.Millisecond)...)
		verifyAfterCrash(t, dir, acks)
	}
	t.Logf("%d kills, %d acknowledged appends verified", crashKills, len(acks))
}

func runAndKill(t *testing.T, dir string, run int, after time.Duration) []ack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRunEnv+"="+strconv.Itoa(run))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 64<<10), 64<<10)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("run %d: child did not start: %q", run, lines.Text())
	}
	timer := time.AfterFunc(after, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	var acks []ack
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) != 6 || f[0] != "ack" {
			t.Fatalf("run %d: child said %q", run, lines.Text())
		}
		a := ack{stream: f[1], ids: strings.Split(f[5], ",")}
		a.first, _ = strconv.ParseUint(f[2], 10, 64)
		a.last, _ = strconv.ParseUint(f[3], 10, 64)
		a.v, _ = strconv.ParseUint(f[4], 10, 64)
		acks = append(acks, a)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("run %d: child ended with %v, not by SIGKILL", run, err)
	}
	if len(acks) == 0 {
		t.Logf("run %d: killed after %v before any acknowledgement", run, after)
	}
	return acks
}

func verifyAfterCrash(t *testing.T, dir string, acks []ack) {
	t.Helper()
	s, err := sqlite.Open(context.Background(), dir, crashOptions)
	if err != nil {
		t.Fatalf("open after crash: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	byPosition := map[uint64]string{}
	seenIDs := map[string]bool{}
	appends := map[string][]int{} // append id -> indexes seen
	counts := map[string]int{}
	versions := map[string]uint64{}
	var n uint64
	for e, err := range s.ReadAll(ctx, 1) {
		if err != nil {
			t.Fatalf("ReadAll after crash: %v", err)
		}
		n++
		if e.Position != n {
			t.Fatalf("gap: position %d after %d", e.Position, n-1)
		}
		id := e.ID.String()
		if seenIDs[id] {
			t.Fatalf("event %s stored twice", id)
		}
		seenIDs[id] = true
		byPosition[e.Position] = id
		versions[e.Stream]++
		if e.Version != versions[e.Stream] {
			t.Fatalf("stream %s: version %d, want %d", e.Stream, e.Version, versions[e.Stream])
		}
		if e.Type == "crash.check" {
			continue // appended by an earlier verification
		}
		var p crashPayload
		if err := json.Unmarshal(e.Public, &p); err != nil {
			t.Fatalf("position %d: torn payload: %v", e.Position, err)
		}
		appends[p.Append] = append(appends[p.Append], p.Index)
		counts[p.Append] = p.Count
	}
	if head, _ := s.Head(ctx); head != n {
		t.Fatalf("Head %d but ReadAll read %d", head, n)
	}
	for id, idx := range appends {
		if len(idx) != counts[id] {
			t.Fatalf("append %s is torn: %d of %d events", id, len(idx), counts[id])
		}
	}
	for _, a := range acks {
		for i, id := range a.ids {
			if got := byPosition[a.first+uint64(i)]; got != id {
				t.Fatalf("acknowledged event %s at position %d is missing (found %q)", id, a.first+uint64(i), got)
			}
		}
	}
	// The stream index agrees with the ledger for every stream.
	for stream, v := range versions {
		if !strings.HasPrefix(stream, "w-") && rand.IntN(20) != 0 {
			continue // sample the many one-append streams
		}
		var got uint64
		for e, err := range s.ReadStream(ctx, stream, 1) {
			if err != nil {
				t.Fatalf("ReadStream(%s) after crash: %v", stream, err)
			}
			got++
			if e.Version != got {
				t.Fatalf("ReadStream(%s): version %d at %d", stream, e.Version, got)
			}
		}
		if got != v {
			t.Fatalf("stream %s: ReadStream %d events, ledger %d", stream, got, v)
		}
	}
	// Appends continue where the ledger ends.
	last := acksLastVersion(acks, "w-1")
	if _, err := s.Append(ctx, "w-1", domain.Exact(versions["w-1"]), storetest.NewEvent(t, "crash.check", nil)); err != nil {
		t.Fatalf("append after recovery (acknowledged version %d, ledger %d): %v", last, versions["w-1"], err)
	}
}

func acksLastVersion(acks []ack, stream string) uint64 {
	var v uint64
	for _, a := range acks {
		if a.stream == stream {
			v = max(v, a.v)
		}
	}
	return v
}
