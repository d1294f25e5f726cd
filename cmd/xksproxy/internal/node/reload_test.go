package node

import (
	"crypto/tls"
	"net"
	"reflect"
	"testing"

	"github.com/xksproxy/xksproxy/internal/testpki"
)

// TestSwappedClientCATakesEffectForNewHandshakes swaps the XKS listener's
// TLS, as a reload does, from one mTLS client CA to another on a real
// listener: a client certificate of the old CA is refused from then on and
// one of the new CA admitted, while a connection made before keeps going.
func TestSwappedClientCATakesEffectForNewHandshakes(t *testing.T) {
	server, oldClients, newClients := testpki.NewCA(t, "server"), testpki.NewCA(t, "old client CA"), testpki.NewCA(t, "new client CA")
	certFile, keyFile := server.Issue(t, "localhost")
	api := func(clientCA string) APIConfig {
		return APIConfig{TLSCertFile: certFile, TLSKeyFile: keyFile, MTLSClientCAFile: clientCA, MTLSClientSubjectCN: "cks.kms.eu-west-1.amazonaws.com"}
	}
	first, err := apiTLS(api(oldClients.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	var s swappableTLS
	s.current.Store(first)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.listenerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo one byte per read, per connection
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				for {
					if _, err := c.Read(b); err != nil {
						return
					}
					if _, err := c.Write(b); err != nil {
						return
					}
				}
			}()
		}
	}()
	dial := func(ca *testpki.CA) (net.Conn, error) {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: server.Roots(), ServerName: "localhost",
			Certificates: []tls.Certificate{*ca.TLSCertificate(t, "cks.kms.eu-west-1.amazonaws.com")}})
		if err != nil {
			return nil, err
		}
		// TLS 1.3 reports a refused client certificate at the first read.
		if _, err = c.Write([]byte{1}); err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		return c, err
	}
	before, err := dial(oldClients)
	if err != nil {
		t.Fatalf("a client of the configured CA: %v", err)
	}
	defer before.Close()
	if c, err := dial(newClients); err == nil {
		c.Close()
		t.Fatal("a client of another CA got through before the swap")
	}

	if _, err := apiTLS(api(certFile + ".missing")); err == nil {
		t.Fatal("a missing CA file built a configuration")
	}
	swapped, err := apiTLS(api(newClients.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	s.current.Store(swapped)
	if c, err := dial(oldClients); err == nil {
		c.Close()
		t.Fatal("a client of the replaced CA got through after the swap")
	}
	after, err := dial(newClients)
	if err != nil {
		t.Fatalf("a client of the new CA after the swap: %v", err)
	}
	after.Close()
	if _, err := before.Write([]byte{2}); err != nil {
		t.Fatalf("the connection from before the swap: %v", err)
	}
	if _, err := before.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the connection from before the swap: %v", err)
	}
}

func TestChangedSectionsNamesWhatWaitsForARestart(t *testing.T) {
	running := &Config{DataDir: "/d", API: APIConfig{Listen: "127.0.0.1:1", TLSCertFile: "a"}, Log: LogConfig{Level: "info"}}
	file := *running
	file.API.TLSCertFile, file.Log.Level = "b", "debug"
	if got := changedSections(running, &file); len(got) != 0 {
		t.Fatalf("reloadable changes reported as waiting for a restart: %v", got)
	}
	file.API.Listen, file.Log.Format, file.DataDir = "127.0.0.1:2", "console", "/e"
	if got := changedSections(running, &file); !reflect.DeepEqual(got, []string{"data_dir", "api", "log"}) {
		t.Fatalf("changedSections = %v, want [data_dir api log]", got)
	}
}
