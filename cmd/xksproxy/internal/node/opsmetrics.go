package node

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The proxy's side of what AWS KMS shows the customer in CloudWatch
// (XksProxyCertificateDaysToExpire, XksProxyCredentialAge), read at scrape
// time from what the node serves now.
var (
	certificateExpiry = prometheus.NewDesc("xksproxy_tls_certificate_expiry_seconds",
		"Seconds until the certificate that new connections to the listener get expires (negative: expired); follows SIGHUP reloads. Wildcard names included, which KMS's XksProxyCertificateDaysToExpire leaves out.",
		[]string{"listener"}, nil)
	credentialAge = prometheus.NewDesc("xksproxy_credential_age_seconds",
		"Seconds since the SigV4 credential was created on the proxy (KMS's XksProxyCredentialAge counts from when it was entered in KMS, so it reads a little less).",
		[]string{"key_store", "access_key_id"}, nil)
)

func (n *Node) collectOps(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, l := range []struct {
		name string
		cert *x509.Certificate
	}{{"api", n.apiCertificate()}, {"admin", n.admin.Certificate()}} {
		if l.cert != nil {
			ch <- prometheus.MustNewConstMetric(certificateExpiry, prometheus.GaugeValue, l.cert.NotAfter.Sub(now).Seconds(), l.name)
		}
	}
	v := n.Views.Load()
	if v == nil {
		return
	}
	for _, ks := range v.Stores() {
		for _, c := range ks.Credentials {
			if !c.CreatedAt.IsZero() {
				ch <- prometheus.MustNewConstMetric(credentialAge, prometheus.GaugeValue, now.Sub(c.CreatedAt).Seconds(), ks.Name, c.AccessKeyID)
			}
		}
	}
}

// apiCertificate is the certificate new XKS connections get.
func (n *Node) apiCertificate() *x509.Certificate {
	if c := n.apiTLS.current.Load(); c != nil && len(c.Certificates) > 0 {
		return c.Certificates[0].Leaf
	}
	return nil
}
