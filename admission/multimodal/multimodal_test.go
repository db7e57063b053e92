package multimodal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Content parts.
func text(s string) schema.ContentPart { return schema.ContentPart{Type: "text", Text: s} }
func image(url string) schema.ContentPart {
	return schema.ContentPart{Type: "image_url", ImageURL: &schema.URLRef{URL: url}}
}
func document(url string) schema.ContentPart {
	return schema.ContentPart{Type: "document", DocumentURL: &schema.URLRef{URL: url}}
}
func file(data string) schema.ContentPart {
	return schema.ContentPart{Type: "file", File: &schema.FileRef{FileData: data, Filename: "a.pdf"}}
}
func inputFile(data string) schema.ContentPart {
	return schema.ContentPart{Type: "input_file", FileData: data, Filename: "a.pdf"}
}

// user is a request with one user message per argument.
func user(messages ...[]schema.ContentPart) *schema.ChatCompletionRequest {
	req := &schema.ChatCompletionRequest{Model: "m"}
	for _, parts := range messages {
		req.Messages = append(req.Messages, schema.Message{Role: "user", Content: schema.Content{Parts: parts}})
	}
	return req
}

func parts(p ...schema.ContentPart) []schema.ContentPart { return p }

func refused(msg, part int, code, text string) *schema.Error {
	p := fmt.Sprintf("messages[%d].content[%d]", msg, part)
	return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: code, Param: p, Message: p + ": " + text}
}

func pngURL(data []byte) string  { return mt.DataURL("image/png", data) }
func jpegURL(data []byte) string { return mt.DataURL("image/jpeg", data) }
func pdfURL(data []byte) string  { return mt.DataURL("application/pdf", data) }
func b64(data []byte) string     { return base64.StdEncoding.EncodeToString(data) }

// fixtures are built once: the large ones take a moment.
var fixtures = sync.OnceValue(func() map[string][]byte {
	return map[string][]byte{
		"png":         mt.PNG(2, 2, 0),
		"jpeg":        mt.JPEG(2, 2),
		"png 4MB":     mt.PNG(8, 8, multimodal.MaxImageBytes),
		"png 4MB+1":   mt.PNG(8, 8, multimodal.MaxImageBytes+1),
		"png 1568":    mt.PNG(1568, 1, 0),
		"png 1569":    mt.PNG(1569, 2, 0),
		"jpeg 1569":   mt.JPEG(3, 1569),
		"pdf":         mt.PDF(1, 0),
		"pdf 0":       mt.PDF(0, 0),
		"pdf 20":      mt.PDF(20, 0),
		"pdf 21":      mt.PDF(21, 0),
		"pdf 10+10":   mt.PDFTree(0, 10, 10),
		"pdf 10+11":   mt.PDFTree(0, 10, 11),
		"pdf lie 1":   mt.PDFWithCount(1, 0, 21),
		"pdf lie 25":  mt.PDFWithCount(25, 0, 3),
		"pdf 32MB":    mt.PDF(2, multimodal.MaxDocumentBytes),
		"pdf 32MB+1":  mt.PDF(2, multimodal.MaxDocumentBytes+1),
		"gif":         []byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
		"png trunc":   mt.PNG(2, 2, 0)[:16],
		"pdf damaged": []byte("%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<<>>\n%%EOF\n"),
		// Same-length edits keep the xref offsets right: a page tree whose
		// root is its own kid, and one whose leaf is not a page.
		"pdf cycle":    bytes.Replace(mt.PDF(1, 0), []byte("/Kids [3 0 R]"), []byte("/Kids [2 0 R]"), 1),
		"pdf not page": bytes.Replace(mt.PDF(1, 0), []byte("/Type /Page /"), []byte("/Type /Font /"), 1),
	}
})

func TestCheck(t *testing.T) {
	f := fixtures()
	png, jpg, pdf := f["png"], f["jpeg"], f["pdf"]
	// Base64 whose padding was dropped: 2 bytes encode to "xxx=".
	unpadded := strings.TrimRight(b64(png[:len(png)-len(png)%3+2]), "=")
	wrapped := b64(png)
	wrapped = wrapped[:20] + "\r\n" + wrapped[20:40] + "\n" + wrapped[40:]

	tests := []struct {
		name      string
		req       *schema.ChatCompletionRequest
		want      *schema.Error // nil: accepted
		images    int
		documents int
		warnings  []multimodal.Warning
	}{
		// Accepted.
		{name: "no parts", req: &schema.ChatCompletionRequest{Messages: []schema.Message{{Role: "user", Content: schema.Content{Text: "hi"}}}}},
		{name: "text only", req: user(parts(text("a"), text("b")))},
		{name: "https image", req: user(parts(image("https://example.com/a.png?x=1"))), images: 1},
		{name: "https image, scheme in capitals", req: user(parts(image("HTTPS://example.com/a.gif"))), images: 1},
		{name: "png", req: user(parts(text("look"), image(pngURL(png)))), images: 1},
		{name: "jpeg", req: user(parts(image(jpegURL(jpg)))), images: 1},
		{name: "media type and base64 marker in any case, with a parameter",
			req: user(parts(image("DATA:Image/PNG;name=a.png;BASE64," + b64(png)))), images: 1},
		{name: "line breaks in base64 are ignored", req: user(parts(image("data:image/png;base64," + wrapped))), images: 1},
		{name: "image of exactly 4 MB", req: user(parts(image(pngURL(f["png 4MB"])))), images: 1},
		{name: "three images in a message", req: user(parts(image(pngURL(png)), text("x"), image(jpegURL(jpg)), image("https://a.test/b.jpg"))), images: 3},
		{name: "three images in each of two messages",
			req:    user(parts(image(pngURL(png)), image(pngURL(png)), image(pngURL(png))), parts(image(pngURL(png)), image(pngURL(png)), image(pngURL(png)))),
			images: 6},
		{name: "longest side 1568 px: no warning", req: user(parts(image(pngURL(f["png 1568"])))), images: 1},
		{name: "longest side 1569 px: a warning", req: user(parts(text("t"), image(pngURL(f["png 1569"])), image(jpegURL(f["jpeg 1569"])))), images: 2,
			warnings: []multimodal.Warning{
				{Param: "messages[0].content[1]", Message: "messages[0].content[1]: the image is 1569x2 px; LaaS recommends at most 1568 px on the longest side (larger images are scaled down)."},
				{Param: "messages[0].content[2]", Message: "messages[0].content[2]: the image is 3x1569 px; LaaS recommends at most 1568 px on the longest side (larger images are scaled down)."},
			}},
		{name: "pdf document", req: user(parts(text("sum up"), document(pdfURL(pdf)))), documents: 1},
		{name: "pdf of 20 pages", req: user(parts(document(pdfURL(f["pdf 20"])))), documents: 1},
		{name: "pdf of 20 pages in a nested tree", req: user(parts(document(pdfURL(f["pdf 10+10"])))), documents: 1},
		{name: "pdf claiming 25 pages that has 3", req: user(parts(document(pdfURL(f["pdf lie 25"])))), documents: 1},
		{name: "pdf of exactly 32 MB", req: user(parts(document(pdfURL(f["pdf 32MB"])))), documents: 1},
		{name: "five documents across messages", req: user(parts(document(pdfURL(pdf)), file(b64(pdf))), parts(inputFile(b64(pdf)), document(pdfURL(pdf)), file(pdfURL(pdf)))),
			documents: 5},
		{name: "file part with a data URL", req: user(parts(file(pdfURL(pdf)))), documents: 1},
		{name: "file part with bare base64", req: user(parts(file(b64(pdf)))), documents: 1},
		{name: "input_file part with bare base64", req: user(parts(inputFile(b64(pdf)))), documents: 1},
		{name: "input_file part with a data URL", req: user(parts(inputFile(pdfURL(pdf)))), documents: 1},
		{name: "images and documents together", req: user(parts(image(pngURL(png)), document(pdfURL(pdf)), file(b64(pdf)), image(jpegURL(jpg)))),
			images: 2, documents: 2},
		{name: "parts Validate refuses are skipped",
			req: user([]schema.ContentPart{{Type: "image_url"}, {Type: "document"}, {Type: "file"},
				{Type: "file", File: &schema.FileRef{FileID: "f"}}, {Type: "input_file", FileID: "f"}, {Type: "input_audio"}})},

		// Image URLs.
		{name: "http image", req: user(parts(text("t"), image("http://example.com/a.png"))),
			want: refused(0, 1, multimodal.CodeUnsupportedURL, "the image URL uses http; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.")},
		{name: "ftp image", req: user(parts(image("ftp://example.com/a.png"))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, `the image URL "ftp://example.com/a.png" is neither an https URL nor a data URL; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.`)},
		{name: "relative image URL", req: user(parts(image("a.png"))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, `the image URL "a.png" is neither an https URL nor a data URL; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.`)},
		{name: "https URL without a host", req: user(parts(image("https:///a.png"))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, `the image URL "https:///a.png" is neither an https URL nor a data URL; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.`)},
		{name: "a long URL is clipped in the message", req: user(parts(image("file:///" + strings.Repeat("a", 200)))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, `the image URL "file:///`+strings.Repeat("a", 119)+`..." is neither an https URL nor a data URL; LaaS accepts only https URLs and data:image/jpeg|png;base64 URLs.`)},

		// Image data URLs.
		{name: "gif", req: user(parts(image(mt.DataURL("image/gif", f["gif"])))),
			want: refused(0, 0, multimodal.CodeUnsupportedMediaType, "the image's media type is image/gif; LaaS accepts only image/jpeg and image/png.")},
		{name: "image/jpg is not a media type", req: user(parts(image(mt.DataURL("image/jpg", jpg)))),
			want: refused(0, 0, multimodal.CodeUnsupportedMediaType, "the image's media type is image/jpg; LaaS accepts only image/jpeg and image/png.")},
		{name: "pdf as an image", req: user(parts(image(pdfURL(pdf)))),
			want: refused(0, 0, multimodal.CodeUnsupportedMediaType, "the image's media type is application/pdf; LaaS accepts only image/jpeg and image/png.")},
		{name: "data URL without a media type", req: user(parts(image("data:;base64," + b64(png)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the image's data URL has no media type; use data:image/png;base64,<base64 data>.")},
		{name: "data URL with nothing before the comma", req: user(parts(image("data:," + b64(png)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the image's data URL has no media type; use data:image/png;base64,<base64 data>.")},
		{name: "data URL without ;base64", req: user(parts(image("data:image/png," + b64(png)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the image's data URL is not marked ;base64; LaaS needs base64 data: use data:image/png;base64,<base64 data>.")},
		{name: "data URL without a comma", req: user(parts(image("data:image/png;base64"))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the image's data URL has no comma; use data:image/png;base64,<base64 data>.")},
		{name: "malformed media type", req: user(parts(image("data:image/;base64," + b64(png)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, `the image's data URL has a malformed media type "image/"; use data:image/png;base64,<base64 data>.`)},
		{name: "invalid base64", req: user(parts(image("data:image/png;base64,iVBORw0K!!!!"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the image's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "base64 without padding", req: user(parts(image("data:image/png;base64," + unpadded))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the image's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "base64 with a trailing character", req: user(parts(image(pngURL(png) + "A"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the image's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "base64 with a space", req: user(parts(image("data:image/png;base64,iVBO Rw0K"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the image's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "URL-safe base64", req: user(parts(image("data:image/png;base64,-_-_"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the image's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "image of 4 MB and 1 byte", req: user(parts(image(pngURL(f["png 4MB+1"])))),
			want: refused(0, 0, multimodal.CodeImageTooLarge, "the image is 4194305 bytes (4.0 MB); LaaS accepts at most 4 MB (4194304 bytes) per image.")},
		{name: "png declared jpeg", req: user(parts(image(jpegURL(png)))),
			want: refused(0, 0, multimodal.CodeMediaTypeMismatch, "the image is declared image/jpeg but its data is image/png; LaaS accepts JPEG and PNG images declared as what they are.")},
		{name: "jpeg declared png", req: user(parts(image(pngURL(jpg)))),
			want: refused(0, 0, multimodal.CodeMediaTypeMismatch, "the image is declared image/png but its data is image/jpeg; LaaS accepts JPEG and PNG images declared as what they are.")},
		{name: "gif declared png", req: user(parts(image(pngURL(f["gif"])))),
			want: refused(0, 0, multimodal.CodeMediaTypeMismatch, "the image is declared image/png but its data is image/gif; LaaS accepts JPEG and PNG images declared as what they are.")},
		{name: "text declared png", req: user(parts(image(pngURL([]byte("hello"))))),
			want: refused(0, 0, multimodal.CodeMediaTypeMismatch, "the image is declared image/png but its data is text/plain; LaaS accepts JPEG and PNG images declared as what they are.")},
		{name: "empty image", req: user(parts(image("data:image/png;base64,"))),
			want: refused(0, 0, multimodal.CodeMediaTypeMismatch, "the image is declared image/png but its data is text/plain; LaaS accepts JPEG and PNG images declared as what they are.")},
		{name: "truncated png", req: user(parts(image(pngURL(f["png trunc"])))),
			want: refused(0, 0, multimodal.CodeInvalidImage, "the image's data is not a readable image/png image.")},

		// Image count.
		{name: "four images in a message", req: user(parts(image(pngURL(png)), text("x"), image(pngURL(png)), image("https://a.test/1.png"), image("https://a.test/2.png"))),
			want: refused(0, 4, multimodal.CodeTooManyImages, "this is image 4 of message 0; LaaS accepts at most 3 images per message.")},
		{name: "the count is per message", req: user(parts(image(pngURL(png))), parts(image(pngURL(png)), image(pngURL(png)), image(pngURL(png)), image(pngURL(png)))),
			want: refused(1, 3, multimodal.CodeTooManyImages, "this is image 4 of message 1; LaaS accepts at most 3 images per message.")},
		{name: "the fourth image is refused for the count before its data is read",
			req:  user(parts(image(pngURL(png)), image(pngURL(png)), image(pngURL(png)), image("http://bad"))),
			want: refused(0, 3, multimodal.CodeTooManyImages, "this is image 4 of message 0; LaaS accepts at most 3 images per message.")},
		{name: "images in assistant messages count too", req: &schema.ChatCompletionRequest{Messages: []schema.Message{
			{Role: "assistant", Content: schema.Content{Parts: parts(image("https://a/1"), image("https://a/2"), image("https://a/3"), image("https://a/4"))}}}},
			want: refused(0, 3, multimodal.CodeTooManyImages, "this is image 4 of message 0; LaaS accepts at most 3 images per message.")},

		// Documents.
		{name: "the sixth document of a request is refused before its data is read",
			req:  user(parts(document(pdfURL(pdf)), file(b64(pdf)), inputFile(b64(pdf))), parts(document(pdfURL(pdf)), text("x"), file(pdfURL(pdf)), document("http://bad"))),
			want: refused(1, 3, multimodal.CodeTooManyDocuments, "this is PDF 6 of the request; the bridge accepts at most 5 PDFs per request (each costs a page count): send the others in further requests.")},
		{name: "remote document URL", req: user(parts(document("https://example.com/a.pdf"))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, "the document is not a data URL; LaaS accepts PDFs only inline, as data:application/pdf;base64 URLs, not by remote URL.")},
		{name: "bare base64 in document_url", req: user(parts(document(b64(pdf)))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, "the document is not a data URL; LaaS accepts PDFs only inline, as data:application/pdf;base64 URLs, not by remote URL.")},
		{name: "file_data holding a URL", req: user(parts(file("https://example.com/a.pdf"))),
			want: refused(0, 0, multimodal.CodeUnsupportedURL, "the file_data is a URL; LaaS accepts PDFs only inline: send the file's bytes as base64.")},
		{name: "document of another media type", req: user(parts(document(mt.DataURL("text/plain", []byte("hi"))))),
			want: refused(0, 0, multimodal.CodeUnsupportedMediaType, "the document's media type is text/plain; LaaS accepts only PDF documents (application/pdf).")},
		{name: "file part of another media type", req: user(parts(text("a"), file(mt.DataURL("application/vnd.openxmlformats-officedocument.wordprocessingml.document", []byte("PK"))))),
			want: refused(0, 1, multimodal.CodeUnsupportedMediaType, "the document's media type is application/vnd.openxmlformats-officedocument.wordprocessingml.document; LaaS accepts only PDF documents (application/pdf).")},
		{name: "document data URL without a media type", req: user(parts(document("data:;base64," + b64(pdf)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the document's data URL has no media type; use data:application/pdf;base64,<base64 data>.")},
		{name: "document data URL without ;base64", req: user(parts(document("data:application/pdf," + b64(pdf)))),
			want: refused(0, 0, multimodal.CodeInvalidDataURL, "the document's data URL is not marked ;base64; LaaS needs base64 data: use data:application/pdf;base64,<base64 data>.")},
		{name: "document invalid base64", req: user(parts(document("data:application/pdf;base64,JVBERi0x*"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the document's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "bare file_data invalid base64", req: user(parts(inputFile("not base64!"))),
			want: refused(0, 0, multimodal.CodeInvalidBase64, "the document's data is not valid base64; send standard base64 with padding (RFC 4648).")},
		{name: "pdf of 32 MB and 1 byte", req: user(parts(document(pdfURL(f["pdf 32MB+1"])))),
			want: refused(0, 0, multimodal.CodeDocumentTooLarge, "the PDF is 33554433 bytes (32.0 MB); LaaS accepts at most 32 MB (33554432 bytes) per PDF.")},
		{name: "pdf of 21 pages", req: user(parts(text("t"), document(pdfURL(f["pdf 21"])))),
			want: refused(0, 1, multimodal.CodeTooManyPages, "the PDF has 21 pages; LaaS accepts at most 20 pages per PDF.")},
		{name: "pdf of 21 pages in a nested tree", req: user(parts(file(b64(f["pdf 10+11"])))),
			want: refused(0, 0, multimodal.CodeTooManyPages, "the PDF has 21 pages; LaaS accepts at most 20 pages per PDF.")},
		{name: "pdf claiming 1 page that has 21", req: user(parts(inputFile(pdfURL(f["pdf lie 1"])))),
			want: refused(0, 0, multimodal.CodeTooManyPages, "the PDF has 21 pages; LaaS accepts at most 20 pages per PDF.")},
		{name: "pdf without pages", req: user(parts(document(pdfURL(f["pdf 0"])))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the PDF has no pages.")},
		{name: "png declared pdf", req: user(parts(document(pdfURL(png)))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document is not a PDF: it has no %PDF- header.")},
		{name: "empty pdf", req: user(parts(file("data:application/pdf;base64,"))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document is not a PDF: it has no %PDF- header.")},
		{name: "damaged pdf", req: user(parts(document(pdfURL(f["pdf damaged"])))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document could not be read as a PDF (it is damaged, or encrypted with a password); LaaS accepts readable PDFs only.")},
		{name: "pdf whose page tree is a cycle", req: user(parts(document(pdfURL(f["pdf cycle"])))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document could not be read as a PDF (it is damaged, or encrypted with a password); LaaS accepts readable PDFs only.")},
		{name: "pdf whose page tree holds a font", req: user(parts(document(pdfURL(f["pdf not page"])))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document could not be read as a PDF (it is damaged, or encrypted with a password); LaaS accepts readable PDFs only.")},
		{name: "truncated pdf", req: user(parts(document(pdfURL(pdf[:len(pdf)/2])))),
			want: refused(0, 0, multimodal.CodeInvalidDocument, "the document could not be read as a PDF (it is damaged, or encrypted with a password); LaaS accepts readable PDFs only.")},

		// Order: the first part in error wins.
		{name: "first bad part wins", req: user(parts(text("a"), image(pngURL(png))), parts(document(pdfURL(f["pdf 21"])), image("http://x"))),
			want: refused(1, 0, multimodal.CodeTooManyPages, "the PDF has 21 pages; LaaS accepts at most 20 pages per PDF.")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(tc.req)
			rep, err := multimodal.Check(context.Background(), tc.req)
			wantError(t, err, tc.want)
			if tc.want != nil {
				if !reflect.DeepEqual(rep, multimodal.Report{}) {
					t.Errorf("Report = %+v with an error, want the zero Report", rep)
				}
			} else {
				want := multimodal.Report{Images: tc.images, Documents: tc.documents, Warnings: tc.warnings}
				if !reflect.DeepEqual(rep, want) {
					t.Errorf("Report = %+v\nwant     %+v", rep, want)
				}
			}
			if !reflect.DeepEqual(tc.req, before) {
				t.Error("Check changed the request")
			}
		})
	}
}

// snapshot copies req deeply enough to see any change Check could make
// (strings are shared: they cannot change).
func snapshot(req *schema.ChatCompletionRequest) *schema.ChatCompletionRequest {
	c := *req
	c.Messages = slices.Clone(req.Messages)
	for i := range c.Messages {
		ps := slices.Clone(c.Messages[i].Content.Parts)
		for j := range ps {
			for _, ref := range []**schema.URLRef{&ps[j].ImageURL, &ps[j].DocumentURL} {
				if *ref != nil {
					v := **ref
					*ref = &v
				}
			}
			if ps[j].File != nil {
				v := *ps[j].File
				ps[j].File = &v
			}
		}
		c.Messages[i].Content.Parts = ps
	}
	return &c
}

// wantError asserts that err is a *schema.Error equal to want (Cause not
// compared), or nil when want is.
func wantError(t *testing.T, err error, want *schema.Error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("error = %v, want nil", err)
		}
		return
	}
	var got *schema.Error
	if !errors.As(err, &got) {
		t.Fatalf("error = %v (%T), want a *schema.Error", err, err)
	}
	g, w := *got, *want
	g.Cause, w.Cause = nil, nil
	if g != w {
		t.Fatalf("error =\n\t%+v\nwant\n\t%+v", g, w)
	}
}

func TestCheckNilRequest(t *testing.T) {
	rep, err := multimodal.Check(context.Background(), nil)
	if err != nil || !reflect.DeepEqual(rep, multimodal.Report{}) {
		t.Fatalf("Check(nil) = %+v, %v", rep, err)
	}
}

func TestCheckContextEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := user(parts(document(pdfURL(fixtures()["pdf"]))))
	rep, err := multimodal.Check(ctx, req)
	if !errors.Is(err, context.Canceled) || !reflect.DeepEqual(rep, multimodal.Report{}) {
		t.Fatalf("Check with an ended context = %+v, %v; want context.Canceled", rep, err)
	}
}

// TestRefusalsKeepTheCause checks that a decoding or parsing failure keeps
// its cause for the logs, while the message stays the client's.
func TestRefusalsKeepTheCause(t *testing.T) {
	tests := []struct {
		name string
		req  *schema.ChatCompletionRequest
	}{
		{"base64", user(parts(image("data:image/png;base64,!!!!")))},
		{"pdf", user(parts(document(pdfURL(fixtures()["pdf damaged"]))))},
		{"image header", user(parts(image(pngURL(fixtures()["png trunc"]))))},
		{"page tree cycle", user(parts(document(pdfURL(fixtures()["pdf cycle"]))))},
		{"page tree leaf", user(parts(document(pdfURL(fixtures()["pdf not page"]))))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := multimodal.Check(context.Background(), tc.req)
			var e *schema.Error
			if !errors.As(err, &e) || e.Cause == nil {
				t.Fatalf("error = %#v, want a *schema.Error with a cause", err)
			}
			if strings.Contains(e.Message, e.Cause.Error()) {
				t.Errorf("the cause %q leaked into the message %q", e.Cause, e.Message)
			}
		})
	}
}

// TestFixtures pins the sizes the boundary cases rely on.
func TestFixtures(t *testing.T) {
	f := fixtures()
	for name, want := range map[string]int{
		"png 4MB": multimodal.MaxImageBytes, "png 4MB+1": multimodal.MaxImageBytes + 1,
		"pdf 32MB": multimodal.MaxDocumentBytes, "pdf 32MB+1": multimodal.MaxDocumentBytes + 1,
	} {
		if got := len(f[name]); got != want {
			t.Errorf("len(%s) = %d, want %d", name, got, want)
		}
	}
}

// TestCheckWritesNoFiles guards the choice of pdfcpu configuration: its
// default one installs a configuration directory under the user's home,
// which a gateway must not do on every request.
func TestCheckWritesNoFiles(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	req := user(parts(document(pdfURL(fixtures()["pdf"])), file(b64(fixtures()["pdf 10+11"]))))
	if _, err := multimodal.Check(context.Background(), req); err == nil {
		t.Fatal("Check accepted a PDF of 21 pages")
	}
	entries, err := os.ReadDir(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("Check wrote %v under the home directory", entries)
	}
}

// TestPageTreeFaults checks why the page tree fixtures are refused, so the
// cases above cannot pass for another reason.
func TestPageTreeFaults(t *testing.T) {
	for name, want := range map[string]string{
		"pdf cycle":    "the page tree reaches object 2 twice",
		"pdf not page": "the page tree holds a /Font object",
	} {
		_, err := multimodal.Check(context.Background(), user(parts(document(pdfURL(fixtures()[name])))))
		var e *schema.Error
		if !errors.As(err, &e) || e.Cause == nil {
			t.Errorf("%s: error %v, want a *schema.Error with a cause", name, err)
		} else if e.Cause.Error() != want {
			t.Errorf("%s: cause %q, want %q", name, e.Cause, want)
		}
	}
}
