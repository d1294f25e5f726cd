package noderpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxAnswerBytes bounds an answer read.
const maxAnswerBytes = 1 << 20

// Client calls other nodes. HTTP dials through the cluster port's mutual
// TLS, which is done by the time HTTP speaks: the URLs are http://addr.
type Client struct {
	HTTP *http.Client
	// Describe names the node behind a URL host in messages (nil: the host
	// itself), for callers whose hosts stand for more than an address.
	Describe func(host string) string
}

// Call sends in to route r of the node at addr and decodes the answer into
// out (when not nil), whatever its status, which it returns; 0 with an
// error when no answer came. in is sent as it is when it is a []byte, as
// JSON otherwise, and not at all when nil.
func (c *Client) Call(ctx context.Context, host string, r Route, query url.Values, in, out any) (int, error) {
	addr := host
	if c.Describe != nil {
		addr = c.Describe(host)
	}
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	path := r.Path
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+host+path, body)
	if err != nil {
		return 0, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		// The URL's http:// is only what HTTP speaks inside the mutual
		// TLS the mux already did: say so rather than print it.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return 0, fmt.Errorf("cluster RPC %s %s%s (mutual TLS): %w", r.Method, addr, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s from %s: %d %q", path, addr, resp.StatusCode, data)
		}
	}
	return resp.StatusCode, nil
}

// WriteJSON answers a call with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
