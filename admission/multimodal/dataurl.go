package multimodal

import (
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"strings"
)

// dataURL is a parsed "data:<media type>[;params];base64,<data>".
type dataURL struct {
	mediaType string // lower case, without parameters
	payload   string // the base64 text after the comma, in place
}

// hasDataScheme reports whether s starts with "data:", in any case.
func hasDataScheme(s string) bool { return len(s) >= 5 && strings.EqualFold(s[:5], "data:") }

// parseDataURL splits s, which has the data scheme. kind ("image",
// "document") and example (a valid header) only shape the messages.
func parseDataURL(at where, s, kind, example string) (dataURL, error) {
	header, payload, ok := strings.Cut(s[len("data:"):], ",")
	if !ok {
		return dataURL{}, at.refuse(CodeInvalidDataURL, nil,
			"the %s's data URL has no comma; use %s<base64 data>.", kind, example)
	}
	const marker = ";base64"
	media, base64Marked := header, false
	if len(header) >= len(marker) && strings.EqualFold(header[len(header)-len(marker):], marker) {
		media, base64Marked = header[:len(header)-len(marker)], true
	}
	if strings.TrimSpace(media) == "" {
		return dataURL{}, at.refuse(CodeInvalidDataURL, nil,
			"the %s's data URL has no media type; use %s<base64 data>.", kind, example)
	}
	if !base64Marked {
		return dataURL{}, at.refuse(CodeInvalidDataURL, nil,
			"the %s's data URL is not marked ;base64; LaaS needs base64 data: use %s<base64 data>.", kind, example)
	}
	mt, _, err := mime.ParseMediaType(media)
	if err != nil {
		return dataURL{}, at.refuse(CodeInvalidDataURL, err,
			"the %s's data URL has a malformed media type %q; use %s<base64 data>.", kind, clip(media), example)
	}
	return dataURL{mediaType: mt, payload: payload}, nil
}

// decodedSize is the size s decodes to if it is valid base64 (padded, line
// breaks ignored), computed from its length without decoding it, so that a
// part over its limit is refused before a buffer is allocated for it. For
// text that is not valid base64 it is an estimate; decodeBase64 refuses
// such text anyway.
func decodedSize(s string) int {
	s = strings.TrimRight(s, "\r\n")
	n := len(s) - strings.Count(s, "\n") - strings.Count(s, "\r")
	pad := len(s) - len(strings.TrimRight(s, "="))
	return max(0, n/4*3-min(pad, 2))
}

// decodeBase64 decodes standard, padded base64 (line breaks ignored) in one
// pass over s, into a buffer of the decoded size (decodedSize, which does
// not count line breaks, with 3 bytes to spare), without copying s.
func decodeBase64(s string) ([]byte, error) {
	dec := base64.NewDecoder(base64.StdEncoding, strings.NewReader(s))
	buf := make([]byte, min(base64.StdEncoding.DecodedLen(len(s)), decodedSize(s)+3))
	n, err := io.ReadFull(dec, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return buf[:n], nil // the data was shorter than the bound
	case err != nil:
		return nil, err
	}
	// The buffer is full: the input must be exhausted too, or what is left
	// is not base64 (an unfinished quantum, a stray character).
	var probe [1]byte
	if m, err := dec.Read(probe[:]); m != 0 || !errors.Is(err, io.EOF) {
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("base64: data beyond its decoded length")
		}
		return nil, err
	}
	return buf, nil
}
