package hsm

import (
	"crypto/rand"
	"testing"
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
