package multimodal

import (
	"bytes"
	"image"
	_ "image/jpeg" // image.DecodeConfig reads JPEG headers
	_ "image/png"  // and PNG headers
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Image media types LaaS accepts.
const (
	mediaJPEG = "image/jpeg"
	mediaPNG  = "image/png"
)

const imageExample = "data:image/png;base64,"

// checkImage checks one image_url part's URL; it returns a warning for an
// image LaaS accepts but advises against.
func checkImage(at where, u string) (*Warning, error) {
	if !hasDataScheme(u) {
		return nil, checkImageURL(at, u)
	}
	d, err := parseDataURL(at, u, "image", imageExample)
	if err != nil {
		return nil, err
	}
	if d.mediaType != mediaJPEG && d.mediaType != mediaPNG {
		return nil, at.refuse(CodeUnsupportedMediaType, nil,
			"the image's media type is %s; LaaS accepts only image/jpeg and image/png.", clip(d.mediaType))
	}
	if n := decodedSize(d.payload); n > MaxImageBytes {
		return nil, at.refuse(CodeImageTooLarge, nil,
			"the image is %s; LaaS accepts at most 4 MB (%d bytes) per image.", size(n), MaxImageBytes)
	}
	data, err := decodeBase64(d.payload)
	if err != nil {
		return nil, at.refuse(CodeInvalidBase64, err,
			"the image's data is not valid base64; send standard base64 with padding (RFC 4648).")
	}
	if real := sniff(data); real != d.mediaType {
		return nil, at.refuse(CodeMediaTypeMismatch, nil,
			"the image is declared %s but its data is %s; LaaS accepts JPEG and PNG images declared as what they are.", d.mediaType, real)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, at.refuse(CodeInvalidImage, err, "the image's data is not a readable %s image.", d.mediaType)
	}
	if side := max(cfg.Width, cfg.Height); side > RecommendedMaxImageSide {
		return at.warn("the image is %dx%d px; LaaS recommends at most %d px on the longest side (larger images are scaled down).",
			cfg.Width, cfg.Height, RecommendedMaxImageSide), nil
	}
	return nil, nil
}

// checkImageURL accepts an https URL with a host; it does not fetch it.
func checkImageURL(at where, u string) error {
	p, err := url.Parse(u)
	switch {
	case err == nil && strings.EqualFold(p.Scheme, "https") && p.Host != "":
		return nil
	case err == nil && strings.EqualFold(p.Scheme, "http"):
		return at.refuse(CodeUnsupportedURL, nil,
			"the image URL uses http; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.")
	}
	return at.refuse(CodeUnsupportedURL, err,
		"the image URL %q is neither an https URL nor a data URL; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.", clip(u))
}

// sniff returns the media type of data from its first bytes, without
// parameters ("image/png", "text/plain", "application/octet-stream").
func sniff(data []byte) string {
	t := http.DetectContentType(data)
	if mt, _, err := mime.ParseMediaType(t); err == nil {
		return mt
	}
	return t
}
