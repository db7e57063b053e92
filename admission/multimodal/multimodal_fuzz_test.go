package multimodal_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// FuzzMedia feeds arbitrary bytes, as an image or as a PDF in each part
// kind, to Check: the image decoders and the PDF reader see hostile data
// here, which FuzzRequest (package worker) rarely reaches through JSON and
// base64. Check must not panic, and a refusal must be a 400 about the part.
//
//	go test -run '^$' -fuzz '^FuzzMedia$' -fuzztime 60s ./admission/multimodal
func FuzzMedia(f *testing.F) {
	f.Add(uint8(0), "image/png", mt.PNG(3, 2, 0))
	f.Add(uint8(0), "image/jpeg", mt.JPEG(2, 3))
	f.Add(uint8(0), "image/png", mt.PNG(1569, 1, 0))
	for kind := range uint8(4) {
		f.Add(kind, "application/pdf", mt.PDF(1, 0))
	}
	f.Add(uint8(1), "application/pdf", mt.PDFTree(0, 2, 3))
	f.Add(uint8(2), "application/pdf", mt.PDFWithCount(1, 0, 4))
	f.Add(uint8(3), "application/pdf", mt.PDF(21, 0))
	// PDF 1.5: a cross-reference stream and object streams.
	f.Add(uint8(1), "application/pdf", mt.PDFObjectStreams(3, 1<<10))
	f.Add(uint8(2), "application/pdf", mt.PDFAliasedObjectStream(3))
	f.Add(uint8(3), "application/pdf", mt.PDFPagesInObjectStreams(2))
	f.Fuzz(func(t *testing.T, kind uint8, mediaType string, data []byte) {
		url := "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)
		var part schema.ContentPart
		switch kind % 4 {
		case 0:
			part = image(url)
		case 1:
			part = document(url)
		case 2:
			part = file(base64.StdEncoding.EncodeToString(data))
		case 3:
			part = inputFile(url)
		}
		_, err := multimodal.Check(context.Background(), user(parts(part)))
		if err == nil {
			return
		}
		var e *schema.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v (%T) is not a *schema.Error", err, err)
		}
		const param = "messages[0].content[0]"
		if e.Status != http.StatusBadRequest || e.Type != schema.TypeInvalidRequest || e.Param != param ||
			!strings.HasPrefix(e.Message, param+": ") || e.Code == "" {
			t.Fatalf("refusal %+v is not a 400 about %s", e, param)
		}
	})
}
