package hsm

import (
	"crypto/rand"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/xksproxy/xksproxy/hsm/netsim"
)

func benchmarkHSM(b *testing.B) (*HSM, string) {
	h := openT(b, testConfig(testToken))
	return h, newKey(b, h)
}

// BenchmarkEncryptGCM32 is the XKS hot path: a 32-byte data key with 64
// bytes of AAD, one fresh IV per call.
func BenchmarkEncryptGCM32(b *testing.B) {
	h, key := benchmarkHSM(b)
	plain, aad, iv := make([]byte, 32), make([]byte, 64), make([]byte, 12)
	b.ReportAllocs()
	for b.Loop() {
		rand.Read(iv)
		if _, _, err := h.EncryptGCM(key, iv, plain, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecryptGCM32(b *testing.B) {
	h, key := benchmarkHSM(b)
	plain, aad, iv := make([]byte, 32), make([]byte, 64), make([]byte, 12)
	ct, tag, err := h.EncryptGCM(key, iv, plain, aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.DecryptGCM(key, iv, ct, tag, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptGCM32Parallel is the server's shape: many request
// goroutines (8 per CPU) sharing the default pool of two sessions.
func BenchmarkEncryptGCM32Parallel(b *testing.B) {
	h, key := benchmarkHSM(b)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		plain, aad := make([]byte, 32), make([]byte, 64)
		for pb.Next() {
			// A fresh IV slice per call, as a server must use (the HSM may
			// still read it after a timeout).
			iv := make([]byte, 12)
			rand.Read(iv)
			if _, _, err := h.EncryptGCM(key, iv, plain, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkNetsimEncrypt is latency hiding without HTTP: 128 callers on
// 64 sessions of the simulated network HSM, at most 64 operations in
// flight, at 0 and 2 ms per operation (the ceiling at 2 ms is 32,000/s).
// It reports the rate and the process's CPU per encrypt.
func BenchmarkNetsimEncrypt(b *testing.B) {
	cfg := netsimConfig(b, testToken, netsim.Config{})
	cfg.PoolSize = 64
	h := openT(b, cfg)
	key := newKey(b, h)
	for _, latency := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run(latency.String(), func(b *testing.B) {
			setNetsim(b, netsim.Config{Latency: latency, MaxInFlight: 64})
			cpu0 := processCPU()
			start := time.Now()
			b.SetParallelism(128 / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				plain, aad := make([]byte, 32), make([]byte, 64)
				for pb.Next() {
					iv := make([]byte, 12)
					rand.Read(iv)
					if _, _, err := h.EncryptGCM(key, iv, plain, aad); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "encrypts/s")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
