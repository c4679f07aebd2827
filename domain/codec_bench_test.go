package domain_test

import (
	"testing"

	"github.com/caledger/caledger/domain"
)

func BenchmarkDecode1KiB(b *testing.B) {
	e := goldenEvents()["v1-sealed"]
	e.Public = make([]byte, 1024)
	for i := range e.Public {
		e.Public[i] = 'a'
	}
	enc, err := domain.Encode(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := domain.Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode1KiB(b *testing.B) {
	e := goldenEvents()["v1-sealed"]
	e.Public = make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := domain.Encode(&e); err != nil {
			b.Fatal(err)
		}
	}
}
