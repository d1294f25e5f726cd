package doctor

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

const tlsFixChain = "configure the certificate file as the server's certificate followed by every intermediate certificate, " +
	"leaf first (the root may be left out): KMS does not fetch a missing intermediate"

// privateCANote is what a root off AWS's list means, said once where it
// matters.
const privateCANote = "KMS accepts only a certificate that chains to one of the roots on AWS's list, for public endpoint and VPC " +
	"endpoint service connectivity alike: a private CA (such as the one `xksproxy dev` makes) is fine for testing with " +
	"doctor --ca, but KMS refuses it"

// pools are the roots doctor knows (the system's and --ca's self-signed
// certificates) and --ca's other certificates.
func (r *run) pools() (roots *x509.CertPool, known []*x509.Certificate, err error) {
	roots, err = x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if r.o.CAFile == "" {
		return roots, nil, nil
	}
	data, err := os.ReadFile(r.o.CAFile)
	if err != nil {
		return nil, nil, err
	}
	certs, err := parsePEMCertificates(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", r.o.CAFile, err)
	}
	for _, c := range certs {
		if selfSigned(c) {
			roots.AddCert(c)
		} else {
			known = append(known, c)
		}
	}
	return roots, known, nil
}

func parsePEMCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}

func selfSigned(c *x509.Certificate) bool {
	return c.Subject.String() == c.Issuer.String() && c.CheckSignatureFrom(c) == nil
}

// checkCertificates makes the certificate checks on what the server sent:
// the chain, its validity now, the host name, and its root.
func (r *run) checkCertificates(state tls.ConnectionState) {
	peers := state.PeerCertificates
	r.checkValidity(peers)
	if err := r.leaf.VerifyHostname(r.host); err != nil {
		r.set(CheckName, Fail, InvalidTLSConfiguration, fmt.Sprintf("the certificate is not valid for %s: it names %s", r.host, certNames(r.leaf)),
			"issue the certificate for the host name in XksProxyUriEndpoint (a subject alternative name)")
	} else {
		r.set(CheckName, Pass, "", fmt.Sprintf("the certificate names %s", r.host), "")
	}

	roots, known, err := r.pools()
	if err != nil {
		r.set(CheckChain, Fail, "", "--ca: "+err.Error(), "give --ca a file of PEM certificates")
		return
	}
	sent := x509.NewCertPool()
	for _, c := range peers[1:] {
		sent.AddCert(c)
	}
	// Completeness is judged at a time when the leaf is valid, so that an
	// expired certificate is reported once, as expired, and not also as a
	// broken chain.
	at := r.now()
	if at.After(r.leaf.NotAfter) || at.Before(r.leaf.NotBefore) {
		at = r.leaf.NotBefore.Add(r.leaf.NotAfter.Sub(r.leaf.NotBefore) / 2)
	}
	verify := func(intermediates *x509.CertPool) ([][]*x509.Certificate, error) {
		return r.leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: at})
	}
	chains, err := verify(sent)
	var unknown x509.UnknownAuthorityError
	switch {
	case err == nil:
		r.set(CheckChain, Pass, "", fmt.Sprintf("the server sends %d certificate(s), a complete chain to the root %s", len(peers), chainRoot(chains[0]).Subject), "")
	case errors.As(err, &unknown):
		withKnown := sent.Clone()
		for _, c := range known {
			withKnown.AddCert(c)
		}
		if full, ferr := verify(withKnown); ferr == nil {
			chains = full
			r.set(CheckChain, Fail, InvalidTLSConfiguration, fmt.Sprintf("the server sends %d certificate(s) and leaves out the intermediate %s",
				len(peers), missing(full[0], peers)), tlsFixChain)
			break
		}
		top := peers[len(peers)-1]
		if len(peers) > 1 && selfSigned(top) {
			// The server sends its root too: the chain is complete, and
			// the root is matched with the list by its fingerprint, whether
			// this system trusts it or not.
			sentRoot := x509.NewCertPool()
			sentRoot.AddCert(top)
			if full, ferr := r.leaf.Verify(x509.VerifyOptions{Roots: sentRoot, Intermediates: sent, CurrentTime: at}); ferr == nil {
				r.set(CheckChain, Pass, "", fmt.Sprintf("the server sends %d certificate(s), a complete chain up to and including its root %s", len(peers), top.Subject), "")
				r.checkTrustedRoot(full)
				return
			}
		}
		if len(peers) == 1 {
			r.set(CheckChain, Fail, InvalidTLSConfiguration, fmt.Sprintf("the server sends only its own certificate, issued by %s, which is no root doctor knows: "+
				"most likely the intermediate certificate is missing (public CAs never issue server certificates from their root). "+
				"If %s is a private CA's root, give it to doctor with --ca", r.leaf.Issuer, r.leaf.Issuer), tlsFixChain)
			r.set(CheckTrustedRoot, Skip, "", "not checked: the chain does not reach a root doctor knows", "")
			return
		}
		r.set(CheckChain, Fail, InvalidTLSConfiguration, fmt.Sprintf("the server sends %d certificate(s) ending with %s, issued by %s, which is no root doctor knows "+
			"(not among this system's roots, nor in --ca)", len(peers), top.Subject, top.Issuer),
			"get the certificate from a CA on AWS's list; to test a private CA, give its root to doctor with --ca")
		r.set(CheckTrustedRoot, Fail, InvalidTLSConfiguration, fmt.Sprintf("the root %s is unknown, so not on the list doctor checks (%s). %s",
			top.Issuer, r.o.TrustedRoots.Source, privateCANote), "get the certificate from a CA on AWS's list")
		return
	default:
		r.set(CheckChain, Fail, InvalidTLSConfiguration, "the chain does not verify: "+err.Error(), tlsFixChain)
		r.set(CheckTrustedRoot, Skip, "", "not checked: the chain does not verify", "")
		return
	}
	r.checkTrustedRoot(chains)
}

// checkTrustedRoot passes when one of the chains ends at a root on the list.
func (r *run) checkTrustedRoot(chains [][]*x509.Certificate) {
	for _, chain := range chains {
		if root, ok := r.o.TrustedRoots.Lookup(chainRoot(chain)); ok {
			r.set(CheckTrustedRoot, Pass, "", fmt.Sprintf("the root %s (%s) is on %s", chainRoot(chain).Subject, root.Alias, r.o.TrustedRoots.Source), "")
			return
		}
	}
	root := chainRoot(chains[0])
	r.set(CheckTrustedRoot, Fail, InvalidTLSConfiguration, fmt.Sprintf("the root %s is not on %s. %s", root.Subject, r.o.TrustedRoots.Source, privateCANote),
		"get the certificate from a CA on AWS's list (or, to test with a private CA, give doctor --trusted-roots with its root; KMS will still refuse it)")
}

func chainRoot(chain []*x509.Certificate) *x509.Certificate { return chain[len(chain)-1] }

// missing names the certificates of chain, below its root, that the server
// did not send.
func missing(chain, sent []*x509.Certificate) string {
	var names []string
	for _, c := range chain[1 : len(chain)-1] {
		found := false
		for _, s := range sent {
			if s.Equal(c) {
				found = true
			}
		}
		if !found {
			names = append(names, c.Subject.String())
		}
	}
	return strings.Join(names, ", ")
}

func (r *run) checkValidity(peers []*x509.Certificate) {
	now := r.now()
	for i, c := range peers {
		what := "the server's certificate"
		if i > 0 {
			what = "the chain's certificate " + c.Subject.String()
		}
		switch {
		case now.After(c.NotAfter):
			r.set(CheckValidity, Fail, InvalidTLSConfiguration, fmt.Sprintf("%s expired on %s", what, c.NotAfter.UTC().Format(time.RFC3339)),
				"renew the certificate, replace the files and reload the node (systemctl reload xksproxy: SIGHUP)")
			return
		case now.Before(c.NotBefore):
			r.set(CheckValidity, Fail, InvalidTLSConfiguration, fmt.Sprintf("%s is not valid before %s", what, c.NotBefore.UTC().Format(time.RFC3339)),
				"check this machine's and the issuer's clocks, or wait until the certificate is valid")
			return
		}
	}
	left := r.leaf.NotAfter.Sub(now)
	days := int(left / (24 * time.Hour))
	if left < expiryWarning {
		r.set(CheckValidity, Warn, "", fmt.Sprintf("the certificate expires on %s, in %d day(s) (AWS's recommended alarm: under 10 days)",
			r.leaf.NotAfter.UTC().Format(time.RFC3339), days), "renew it now, then reload the node (SIGHUP)")
		return
	}
	r.set(CheckValidity, Pass, "", fmt.Sprintf("valid until %s (%d days)", r.leaf.NotAfter.UTC().Format(time.RFC3339), days), "")
}

func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no subject alternative name (a common name alone is not enough)"
	}
	return strings.Join(names, ", ")
}
