package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// The HTTP/1.1 the bench writes and reads (RFC 9112): one kind of request,
// and whatever a server may answer with — a length, chunks, or a body that
// ends with the connection; interim 1xx answers skipped.

// appendRequest appends an HTTP/1.1 POST of a JSON body.
func appendRequest(b []byte, host, path string, body []byte, amzDate, authorization string) []byte {
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nX-Amz-Date: "...)
	b = append(b, amzDate...)
	b = append(b, "\r\nAuthorization: "...)
	b = append(b, authorization...)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// readResponse reads one answer from br. Its body is appended to buf, at
// most maxResponseBytes of it; keep says whether the connection may carry
// another request. An io.EOF means the connection closed cleanly before
// the answer began.
func readResponse(br *bufio.Reader, buf []byte) (status int, body []byte, keep bool, err error) {
	for {
		line, err := readLine(br, true)
		if err != nil {
			return 0, buf, false, err
		}
		proto, rest, _ := bytes.Cut(line, []byte(" "))
		code, _, _ := bytes.Cut(rest, []byte(" "))
		if !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(code) != 3 {
			return 0, buf, false, malformed(line)
		}
		if status, err = strconv.Atoi(string(code)); err != nil || status < 100 {
			return 0, buf, false, malformed(line)
		}
		keep = string(proto) == "HTTP/1.1"
		length, chunked := int64(-1), false
		for {
			if line, err = readLine(br, false); err != nil {
				return 0, buf, false, err
			}
			if len(line) == 0 {
				break
			}
			name, value, ok := bytes.Cut(line, []byte(":"))
			if !ok {
				return 0, buf, false, malformed(line)
			}
			value = bytes.TrimSpace(value)
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || (length >= 0 && n != length) {
					return 0, buf, false, malformed(line)
				}
				length = n
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				if !bytes.EqualFold(value, []byte("chunked")) {
					return 0, buf, false, fmt.Errorf("unsupported Transfer-Encoding %q", value)
				}
				chunked = true
			case bytes.EqualFold(name, []byte("Connection")):
				for _, opt := range bytes.Split(value, []byte(",")) {
					if bytes.EqualFold(bytes.TrimSpace(opt), []byte("close")) {
						keep = false
					}
				}
			}
		}
		switch {
		case status == 101:
			return 0, buf, false, malformed([]byte("101 Switching Protocols"))
		case status < 200:
			continue // interim: the answer follows
		case status == 204 || status == 304:
			return status, buf, keep, nil
		case chunked:
			buf, err = readChunked(br, buf)
		case length > maxResponseBytes:
			err = errResponseTooLarge
		case length >= 0:
			buf = append(buf, make([]byte, length)...)
			_, err = io.ReadFull(br, buf[len(buf)-int(length):])
		default:
			// No length: the body ends with the connection.
			keep = false
			buf, err = readToEOF(br, buf)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return status, buf, keep, err
	}
}

func readChunked(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		line, err := readLine(br, false)
		if err != nil {
			return buf, err
		}
		sizeField, _, _ := bytes.Cut(line, []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeField)), 16, 64)
		if err != nil || size < 0 {
			return buf, malformed(line)
		}
		if size == 0 {
			// Trailer fields, up to an empty line.
			for {
				if line, err = readLine(br, false); err != nil || len(line) == 0 {
					return buf, err
				}
			}
		}
		if int64(len(buf))+size > maxResponseBytes {
			return buf, errResponseTooLarge
		}
		buf = append(buf, make([]byte, size)...)
		if _, err := io.ReadFull(br, buf[len(buf)-int(size):]); err != nil {
			return buf, err
		}
		if line, err = readLine(br, false); err != nil {
			return buf, err
		}
		if len(line) != 0 {
			return buf, malformed(line)
		}
	}
}

func readToEOF(br *bufio.Reader, buf []byte) ([]byte, error) {
	rest, err := io.ReadAll(io.LimitReader(br, maxResponseBytes+1-int64(len(buf))))
	buf = append(buf, rest...)
	if err == nil && len(buf) > maxResponseBytes {
		err = errResponseTooLarge
	}
	return buf, err
}

// readLine reads one CRLF- (or LF-) terminated line, without its ending;
// it is valid until the next read. A clean end of the connection before
// the first byte of an answer is io.EOF, anywhere else
// io.ErrUnexpectedEOF.
func readLine(br *bufio.Reader, first bool) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, fmt.Errorf("malformed HTTP answer: a line longer than %d bytes", br.Size())
	case errors.Is(err, io.EOF) && (!first || len(line) > 0):
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func malformed(line []byte) error {
	return fmt.Errorf("malformed HTTP answer: %q", clip(string(line)))
}
