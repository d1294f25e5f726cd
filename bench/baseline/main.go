// Command baseline is the yardstick for the proxy's hot path: a bare
// fasthttp server over the same TLS that does nothing per request but one
// SoftHSMv2 AES-GCM encrypt through a pool of sessions, on a session-object
// copy of a token key as the proxy uses (or on the token key itself, with
// -key-object token) — the floor cost of any XKS proxy on this HSM. `make bench-ratio` measures it
// and the proxy with the same load generator and prints the ratio; `make bench-efficiency`
// compares their CPU per encrypt at one constant rate. It answers with the ciphertext, IV and
// tag, the shape xksbench checks; it ignores the request (no SigV4, no JSON decoding).
package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"

	"github.com/miekg/pkcs11"
	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "HTTPS address")
	certFile := flag.String("cert", "", "TLS certificate (PEM)")
	keyFile := flag.String("key", "", "TLS key (PEM)")
	module := flag.String("module", "/usr/lib/softhsm/libsofthsm2.so", "PKCS#11 module")
	token := flag.String("token", "", "token label")
	pinFile := flag.String("pin-file", "", "file holding the user PIN")
	pool := flag.Int("pool", 2, "PKCS#11 sessions")
	label := flag.String("label", "xksproxy-baseline", "AES-256 token key to use (created when missing)")
	keyObject := flag.String("key-object", "session", "session: encrypt with a session-object copy of the token key, as the proxy does; token: with the token key itself")
	flag.Parse()

	pin, err := os.ReadFile(*pinFile)
	if err != nil {
		log.Fatal(err)
	}
	if *keyObject != "session" && *keyObject != "token" {
		log.Fatalf("-key-object is session or token, not %q", *keyObject)
	}
	sessions, keyHandle, err := openPool(*module, *token, strings.TrimSpace(string(pin)), *label, *pool, *keyObject == "session")
	if err != nil {
		log.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	plaintext := make([]byte, 32)
	aad := make([]byte, 64+3)
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			s := <-sessions
			iv := make([]byte, 12)
			rand.Read(iv)
			params := pkcs11.NewGCMParams(iv, aad, 128)
			err := s.ctx.EncryptInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, keyHandle)
			var out []byte
			if err == nil {
				out, err = s.ctx.Encrypt(s.h, plaintext)
			}
			params.Free()
			sessions <- s
			if err != nil {
				ctx.Error(err.Error(), fasthttp.StatusInternalServerError)
				return
			}
			ctx.SetContentType("application/json")
			body := append([]byte(`{"ciphertext":"`), base64.StdEncoding.EncodeToString(out[:len(out)-16])...)
			body = append(body, `","initializationVector":"`...)
			body = append(body, base64.StdEncoding.EncodeToString(iv)...)
			body = append(body, `","authenticationTag":"`...)
			body = append(body, base64.StdEncoding.EncodeToString(out[len(out)-16:])...)
			ctx.SetBody(append(body, `"}`...))
		},
	}
	fmt.Printf("baseline serving on https://%s with %d sessions, %s key object\n", ln.Addr(), *pool, *keyObject)
	log.Fatal(srv.Serve(tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})))
}

type session struct {
	ctx *pkcs11.Ctx
	h   pkcs11.SessionHandle
}

func openPool(module, token, pin, label string, size int, sessionCopy bool) (chan session, pkcs11.ObjectHandle, error) {
	p := pkcs11.New(module)
	if p == nil {
		return nil, 0, fmt.Errorf("cannot load %s", module)
	}
	if err := p.Initialize(); err != nil {
		return nil, 0, err
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return nil, 0, err
	}
	var slot uint
	found := false
	for _, s := range slots {
		if info, err := p.GetTokenInfo(s); err == nil && strings.TrimSpace(info.Label) == token {
			slot, found = s, true
		}
	}
	if !found {
		return nil, 0, fmt.Errorf("no token %q", token)
	}
	pool := make(chan session, size)
	for i := range size {
		h, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return nil, 0, err
		}
		if i == 0 {
			if err := p.Login(h, pkcs11.CKU_USER, pin); err != nil {
				return nil, 0, err
			}
		}
		pool <- session{p, h}
	}
	s := <-pool
	defer func() { pool <- s }()
	key, err := tokenKey(p, s.h, label)
	if err != nil || !sessionCopy {
		return pool, key, err
	}
	copied, err := p.CopyObject(s.h, key, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)})
	return pool, copied, err
}

// tokenKey finds the AES token key labelled label, generating it when missing.
func tokenKey(p *pkcs11.Ctx, sh pkcs11.SessionHandle, label string) (pkcs11.ObjectHandle, error) {
	template := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	if err := p.FindObjectsInit(sh, template); err != nil {
		return 0, err
	}
	objs, _, err := p.FindObjects(sh, 1)
	p.FindObjectsFinal(sh)
	if err != nil {
		return 0, err
	}
	if len(objs) == 1 {
		return objs[0], nil
	}
	return p.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	})
}
