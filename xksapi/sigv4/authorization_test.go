package sigv4

import (
	"strings"
	"testing"
)

const (
	specSig = "1164eaa8e79eacaa9c0df54aa42f3b300380d14bedfc08e3b319648d4abfff66"
	// specAuth is the example header of the specification's Appendix A.
	specAuth = "AWS4-HMAC-SHA256 Credential=MUBSXM6K3KMXHN6RRCXI7TWQH4NU76HYFKRSESPMTSTIBADXQQXQ/20211009/us-west-2/" +
		"kms-xks-proxy/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + specSig
)

func TestParseAuthorizationSpecExample(t *testing.T) {
	a, err := ParseAuthorization([]byte(specAuth))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, got, want string }{
		{"AccessKeyID", string(a.AccessKeyID), "MUBSXM6K3KMXHN6RRCXI7TWQH4NU76HYFKRSESPMTSTIBADXQQXQ"},
		{"Date", string(a.Date), "20211009"},
		{"Region", string(a.Region), "us-west-2"},
		{"Service", string(a.Service), Service},
		{"SignedHeaders", string(a.SignedHeaders), "host;x-amz-date"},
		{"Signature", string(a.Signature), specSig},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if got := string(appendAuthorization(nil, &a)); got != specAuth {
		t.Errorf("re-rendered\n%s\nwant\n%s", got, specAuth)
	}
}

// TestParseAuthorizationAliases checks the no-copy promise: the fields are
// windows into the input.
func TestParseAuthorizationAliases(t *testing.T) {
	in := []byte(specAuth)
	a, err := ParseAuthorization(in)
	if err != nil {
		t.Fatal(err)
	}
	in[len(in)-1] = 'e'
	if a.Signature[63] != 'e' {
		t.Fatal("Signature does not alias the input")
	}
}

func TestParseAuthorizationAccepts(t *testing.T) {
	cred := "Credential=AKIAI2SFODNN7EXAMPLE/20261110/us-east-1/kms-xks-proxy/aws4_request"
	sh := "SignedHeaders=content-type;host;x-amz-date"
	sig := "Signature=" + specSig
	for _, h := range []string{
		"AWS4-HMAC-SHA256 " + cred + ", " + sh + ", " + sig,
		"AWS4-HMAC-SHA256 " + cred + "," + sh + "," + sig,
		"AWS4-HMAC-SHA256   " + cred + ",   " + sh + ",  " + sig,
		"AWS4-HMAC-SHA256 " + sig + ", " + cred + ", " + sh,
		"AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=Host;X-Amz-Date, " + sig, // Verify's problem, not the parser's
	} {
		if _, err := ParseAuthorization([]byte(h)); err != nil {
			t.Errorf("ParseAuthorization(%q): %v", h, err)
		}
	}
}

func TestParseAuthorizationRejects(t *testing.T) {
	cred := "Credential=AKIAI2SFODNN7EXAMPLE/20261110/us-east-1/kms-xks-proxy/aws4_request"
	sh := "SignedHeaders=host;x-amz-date"
	sig := "Signature=" + specSig
	ok := "AWS4-HMAC-SHA256 " + cred + ", " + sh + ", " + sig
	for _, tc := range []struct {
		name, h string
		want    error
	}{
		{"empty", "", ErrMissing},
		{"other algorithm", strings.Replace(ok, "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256", 1), ErrMalformed},
		{"lowercase algorithm", strings.Replace(ok, "AWS4-HMAC-SHA256", "aws4-hmac-sha256", 1), ErrMalformed},
		{"algorithm only", "AWS4-HMAC-SHA256", ErrMalformed},
		{"algorithm and space", "AWS4-HMAC-SHA256 ", ErrMalformed},
		{"comma after algorithm", "AWS4-HMAC-SHA256, " + cred + ", " + sh + ", " + sig, ErrMalformed},
		{"leading space", " " + ok, ErrMalformed},
		{"trailing space", ok + " ", ErrMalformed},
		{"trailing comma", ok + ",", ErrMalformed},
		{"trailing garbage", ok + ", x", ErrMalformed},
		{"unknown component", ok + ", Foo=bar", ErrMalformed},
		{"tab separator", "AWS4-HMAC-SHA256 " + cred + ",\t" + sh + ", " + sig, ErrMalformed},
		{"missing Credential", "AWS4-HMAC-SHA256 " + sh + ", " + sig, ErrMalformed},
		{"missing SignedHeaders", "AWS4-HMAC-SHA256 " + cred + ", " + sig, ErrMalformed},
		{"missing Signature", "AWS4-HMAC-SHA256 " + cred + ", " + sh, ErrMalformed},
		{"duplicate Credential", ok + ", " + cred, ErrMalformed},
		{"duplicate Credential, second bad", ok + ", Credential=x", ErrMalformed},
		{"duplicate SignedHeaders", ok + ", " + sh, ErrMalformed},
		{"duplicate Signature", ok + ", " + sig, ErrMalformed},
		{"uppercase hex signature", strings.Replace(ok, specSig, strings.ToUpper(specSig), 1), ErrMalformed},
		{"short signature", strings.Replace(ok, specSig, specSig[:63], 1), ErrMalformed},
		{"long signature", strings.Replace(ok, specSig, specSig+"0", 1), ErrMalformed},
		{"non-hex signature", strings.Replace(ok, specSig, "g"+specSig[1:], 1), ErrMalformed},
		{"lowercase component name", strings.Replace(ok, "Credential=", "credential=", 1), ErrMalformed},
		{"space before =", strings.Replace(ok, "Credential=", "Credential =", 1), ErrMalformed},
		{"credential too short", strings.Replace(ok, "/aws4_request", "", 1), ErrMalformed},
		{"credential too long", strings.Replace(ok, "/aws4_request", "/x/aws4_request", 1), ErrMalformed},
		{"empty access key id", strings.Replace(ok, "AKIAI2SFODNN7EXAMPLE", "", 1), ErrMalformed},
		{"access key id punctuation", strings.Replace(ok, "AKIAI2SFODNN7EXAMPLE", "AKIA+", 1), ErrMalformed},
		{"access key id too long", strings.Replace(ok, "AKIAI2SFODNN7EXAMPLE", strings.Repeat("A", 129), 1), ErrMalformed},
		{"date not digits", strings.Replace(ok, "20261110", "2026111x", 1), ErrMalformed},
		{"date too short", strings.Replace(ok, "20261110", "2026111", 1), ErrMalformed},
		{"empty region", strings.Replace(ok, "us-east-1", "", 1), ErrMalformed},
		{"region with dot", strings.Replace(ok, "us-east-1", "us.east", 1), ErrMalformed},
		{"empty service", strings.Replace(ok, "kms-xks-proxy", "", 1), ErrMalformed},
		{"wrong terminator", strings.Replace(ok, "aws4_request", "aws4_requests", 1), ErrScope},
		{"empty terminator", strings.Replace(ok, "aws4_request", "", 1), ErrScope},
		{"empty SignedHeaders", strings.Replace(ok, sh, "SignedHeaders=", 1), ErrMalformed},
		{"newline", ok + "\n", ErrMalformed},
		{"NUL in signed headers", strings.Replace(ok, "host;", "ho\x00st;", 1), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAuthorization([]byte(tc.h))
			wantErr(t, err, tc.want)
			if n := sentinelCount(err); n != 1 {
				t.Fatalf("%v matches %d sentinels", err, n)
			}
		})
	}
}
