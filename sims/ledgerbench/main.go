// Command ledgerbench measures the embedded event store against the disk it runs
// on: a raw fsync baseline, then one appender alone, 64 concurrent appenders (one
// stream each, and a new stream per append as issuance does), and ReadAll. It
// prints a Markdown table for BENCHMARKS.md.
//
//	go run ./sims/ledgerbench [-dir DIR] [-duration 5s]
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/caledger/caledger/domain"
	"github.com/caledger/caledger/eventstore/sqlite"
	"github.com/caledger/caledger/sims/rawdisk"
)

func main() {
	ctx := context.Background()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "ledgerbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ledgerbench", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory on the disk to measure (default: a new temporary directory)")
	duration := fs.Duration("duration", 5*time.Second, "length of each timed phase")
	appenders := fs.Int("appenders", 64, "concurrent appenders")
	rounds := fs.Int("rounds", 10, "alternating rounds of raw fsync and the lone appender")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "ledgerbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if err := rawdisk.RefuseTmpfs(*dir); err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(out, "ledgerbench: %s, %d CPUs, GOMAXPROCS %d, dir %s, %v per phase\n\n",
		runtime.Version(), runtime.NumCPU(), runtime.GOMAXPROCS(0), *dir, *duration)

	rawBefore, err := rawdisk.SyncRate(*dir, *duration/2)
	if err != nil {
		return err
	}
	s, err := sqlite.Open(ctx, filepath.Join(*dir, "ledger"), sqlite.Options{})
	if err != nil {
		return err
	}
	defer func() { s.Close() }() // the store reopened below, too
	payload := make([]byte, 1024)
	rand.Read(payload)

	lone, err := loneAppender(ctx, *dir, s, *rounds, payload)
	if err != nil {
		return err
	}
	rawMid, err := rawdisk.SyncRate(*dir, *duration/2)
	if err != nil {
		return err
	}
	many, err := appendLoad(ctx, s, *appenders, *duration, payload, false)
	if err != nil {
		return err
	}
	manyNew, err := appendLoad(ctx, s, *appenders, *duration, payload, true)
	if err != nil {
		return err
	}
	rawAfter, err := rawdisk.SyncRate(*dir, *duration/2)
	if err != nil {
		return err
	}
	// Right after the load the drainer is still writing the last commits to
	// ledger.db and checkpointing, on the same two cores; then again with the
	// store closed and reopened, at rest.
	readBusy, n, err := readAll(ctx, s)
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	reopened, err := sqlite.Open(ctx, filepath.Join(*dir, "ledger"), sqlite.Options{})
	if err != nil {
		return err // the deferred Close closes the first store again, which is allowed
	}
	s = reopened
	read, _, err := readAll(ctx, s)
	if err != nil {
		return err
	}
	raw := median(rawBefore, rawMid, rawAfter)

	fmt.Fprintf(out, "| measurement | rate | latency p50 / p99 / max | ratio to baseline |\n|---|---|---|---|\n")
	fmt.Fprintf(out, "| baseline: raw 4 KiB write + fsync, 1 writer (before / middle / after) | %.0f / %.0f / %.0f per s | | |\n", rawBefore, rawMid, rawAfter)
	fmt.Fprintf(out, "| append, 1 appender, 1 KiB events, one stream (%d alternating rounds) | %.0f events/s | %s | %.2f × raw fsync, %.2f × raw fdatasync (medians of rounds; min %.2f / %.2f, max %.2f / %.2f) |\n",
		len(lone.ratios), lone.rate, lone.latency(), median1(lone.ratios), median1(lone.dataRatios),
		lone.ratios[0], lone.dataRatios[0], lone.ratios[len(lone.ratios)-1], lone.dataRatios[len(lone.dataRatios)-1])
	fmt.Fprintf(out, "| append, %d appenders, 1 KiB events, one stream each | %.0f events/s | %s | %.1f × raw fsync |\n", *appenders, many.rate, many.latency(), many.rate/raw)
	fmt.Fprintf(out, "| append, %d appenders, 1 KiB events, a new stream per append | %.0f events/s | %s | %.1f × raw fsync |\n", *appenders, manyNew.rate, manyNew.latency(), manyNew.rate/raw)
	fmt.Fprintf(out, "| ReadAll of %d events (decoded), right after the load | %.0f events/s | | |\n", n, readBusy)
	fmt.Fprintf(out, "| ReadAll of the same events, store reopened | %.0f events/s | | |\n", read)
	fmt.Fprintf(out, "\nraw fsync baseline used for ratios: median %.0f/s\n", raw)
	return nil
}

// loneResult is the lone appender measured in rounds, each between two raw fsync
// measurements: this disk's fsync rate drifts by 2x within a minute, so a ratio is
// only fair against a baseline taken seconds before and after.
type loneResult struct {
	loadResult
	ratios     []float64 // to raw fsync, sorted; one per round
	dataRatios []float64 // to raw fdatasync, sorted; one per round
}

func median1(sorted []float64) float64 { return sorted[len(sorted)/2] }

func loneAppender(ctx context.Context, dir string, s *sqlite.Store, rounds int, payload []byte) (loneResult, error) {
	const appendFor, rawFor = time.Second, 250 * time.Millisecond
	var res loneResult
	var elapsed time.Duration
	baselines := func() (fsync, fdatasync float64, err error) {
		if fsync, err = rawdisk.SyncRate(dir, rawFor); err != nil {
			return
		}
		fdatasync, err = rawdisk.DatasyncRate(dir, rawFor)
		return
	}
	for range max(rounds, 1) {
		before, beforeData, err := baselines()
		if err != nil {
			return res, err
		}
		start := time.Now()
		l, err := appendLoad(ctx, s, 1, appendFor, payload, false)
		if err != nil {
			return res, err
		}
		elapsed += time.Since(start)
		after, afterData, err := baselines()
		if err != nil {
			return res, err
		}
		res.ratios = append(res.ratios, l.rate/((before+after)/2))
		res.dataRatios = append(res.dataRatios, l.rate/((beforeData+afterData)/2))
		res.latencies = append(res.latencies, l.latencies...)
	}
	slices.Sort(res.ratios)
	slices.Sort(res.dataRatios)
	res.rate = float64(len(res.latencies)) / elapsed.Seconds()
	return res, nil
}

type loadResult struct {
	rate      float64
	latencies []time.Duration
}

func (r loadResult) latency() string {
	if len(r.latencies) == 0 {
		return ""
	}
	slices.Sort(r.latencies)
	q := func(p float64) time.Duration { return r.latencies[int(p*float64(len(r.latencies)-1))] }
	return fmt.Sprintf("%v / %v / %v", q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), r.latencies[len(r.latencies)-1].Round(time.Microsecond))
}

// appendLoad runs n appenders for d. Each appends one event per call, to its own
// stream with an exact expected version, or to a new stream each time.
func appendLoad(ctx context.Context, s *sqlite.Store, n int, d time.Duration, payload []byte, newStreams bool) (loadResult, error) {
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			stream := fmt.Sprintf("bench-%d-%s", w, randHex(8))
			var version uint64
			for time.Now().Before(deadline) {
				e, err := event(payload)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				expected := domain.Exact(version)
				if newStreams {
					stream, expected = "cert-"+randHex(16), domain.NoStream
				}
				t := time.Now()
				a, err := s.Append(ctx, stream, expected, e)
				lat = append(lat, time.Since(t))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				version = a.Version
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	return loadResult{rate: float64(len(all)) / time.Since(start).Seconds(), latencies: all}, nil
}

func readAll(ctx context.Context, s *sqlite.Store) (float64, int, error) {
	n := 0
	start := time.Now()
	for _, err := range s.ReadAll(ctx, 1) {
		if err != nil {
			return 0, 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), n, nil
}

func event(payload []byte) (domain.Event, error) {
	id, err := domain.NewEventID(rand.Reader)
	if err != nil {
		return domain.Event{}, err
	}
	return domain.Event{ID: id, Type: "bench.appended", Schema: 1, Time: time.Now(),
		Actor: domain.Actor{ID: "bench", Role: "officer"}, Public: payload}, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func median(a, b, c float64) float64 {
	v := []float64{a, b, c}
	slices.Sort(v)
	return v[1]
}
