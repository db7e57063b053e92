package multimodal

import (
	"context"
	"fmt"
	"net/http"

	"github.com/laas-bridge/laas-bridge/schema"
)

// The limits LaaS documents. Sizes are of the decoded data, in bytes; "MB"
// in messages means 1024*1024 bytes.
const (
	// MaxImageBytes is the largest image LaaS accepts: 4 MB.
	MaxImageBytes = 4 << 20
	// MaxImagesPerMessage is how many images one message may hold.
	MaxImagesPerMessage = 3
	// RecommendedMaxImageSide is the longest side, in pixels, LaaS
	// recommends; a longer one is a warning, not an error.
	RecommendedMaxImageSide = 1568
	// MaxDocumentBytes is the largest PDF LaaS accepts: 32 MB.
	MaxDocumentBytes = 32 << 20
	// MaxDocumentPages is how many pages a PDF may have.
	MaxDocumentPages = 20
	// MaxDocumentsPerRequest is how many PDFs one request may hold. LaaS
	// documents no such limit; the bridge sets it so that one 64 MiB body
	// cannot multiply the budget of a PDF's page count (budget.go).
	MaxDocumentsPerRequest = 5
)

// Error codes of Check's refusals (the "code" of the OpenAI error body).
// Every refusal is a 400 invalid_request_error.
const (
	// CodeInvalidDataURL: a data URL without a comma, a media type or
	// ";base64", or with a malformed media type.
	CodeInvalidDataURL = "invalid_data_url"
	// CodeInvalidBase64: data that is not standard, padded base64.
	CodeInvalidBase64 = "invalid_base64"
	// CodeUnsupportedURL: an image URL that is neither https nor data, or a
	// document given by a remote URL.
	CodeUnsupportedURL = "unsupported_url"
	// CodeUnsupportedMediaType: an image declared other than image/jpeg or
	// image/png, or a document declared other than application/pdf.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeMediaTypeMismatch: image bytes whose real type is not the declared
	// one.
	CodeMediaTypeMismatch = "media_type_mismatch"
	// CodeInvalidImage: a JPEG or PNG whose header cannot be read.
	CodeInvalidImage = "invalid_image"
	// CodeImageTooLarge: an image above MaxImageBytes.
	CodeImageTooLarge = "image_too_large"
	// CodeTooManyImages: a message with more than MaxImagesPerMessage images.
	CodeTooManyImages = "too_many_images"
	// CodeInvalidDocument: a document that is not a readable PDF, or has no
	// pages.
	CodeInvalidDocument = "invalid_document"
	// CodeDocumentTooLarge: a PDF above MaxDocumentBytes.
	CodeDocumentTooLarge = "document_too_large"
	// CodeTooManyPages: a PDF with more than MaxDocumentPages pages.
	CodeTooManyPages = "too_many_pages"
	// CodeTooManyDocuments: a request with more than
	// MaxDocumentsPerRequest PDFs.
	CodeTooManyDocuments = "too_many_documents"
	// CodeDocumentTooComplex: a PDF whose pages cannot be counted within
	// the budget (DocumentCheckTimeout and the reader's limits, see
	// budget.go): a stream that inflates beyond limit, an object stream
	// with too many objects, a table naming one object too often.
	CodeDocumentTooComplex = "document_too_complex"
)

// Report describes a request Check accepted.
type Report struct {
	// Images and Documents count the image and PDF parts checked.
	Images, Documents int
	// Warnings lists what LaaS accepts but advises against, in part order.
	Warnings []Warning
}

// Warning is advice about one part; it does not stop the request.
type Warning struct {
	// Param is the part's path, "messages[i].content[j]".
	Param string
	// Message starts with Param and says what LaaS recommends.
	Message string
}

// Check enforces LaaS's limits on the images and PDFs of req, as the package
// documentation describes. req should have passed req.Validate first: Check
// relies on it for the structure of the parts and skips a part that lacks
// the object its type needs (an image_url part without image_url, a file
// part without file.file_data, ...).
//
// It returns a Report when req is within the limits, or a 400 *schema.Error
// for the first part that is not. If ctx ends first it returns ctx.Err().
// Check does not change req and keeps none of its data. A nil req is
// accepted. Check does not bound how many PDFs are read at once across
// its callers; a server shares one Checker instead.
func Check(ctx context.Context, req *schema.ChatCompletionRequest) (Report, error) {
	return check(ctx, req, nil)
}

// check is Check, reading each PDF under one of gate's slots.
func check(ctx context.Context, req *schema.ChatCompletionRequest, gate *Checker) (Report, error) {
	var rep Report
	if req == nil {
		return rep, nil
	}
	for i := range req.Messages {
		images := 0
		parts := req.Messages[i].Content.Parts
		for j := range parts {
			if err := ctx.Err(); err != nil {
				return Report{}, err
			}
			at := where{msg: i, part: j}
			var err error
			switch p := &parts[j]; p.Type {
			case "image_url":
				if p.ImageURL == nil {
					continue
				}
				if images++; images > MaxImagesPerMessage {
					return Report{}, at.refuse(CodeTooManyImages, nil,
						"this is image %d of message %d; LaaS accepts at most %d images per message.", images, i, MaxImagesPerMessage)
				}
				rep.Images++
				var w *Warning
				if w, err = checkImage(at, p.ImageURL.URL); w != nil {
					rep.Warnings = append(rep.Warnings, *w)
				}
			case "document", "file", "input_file":
				doc, bare, ok := documentOf(p)
				if !ok {
					continue
				}
				if rep.Documents++; rep.Documents > MaxDocumentsPerRequest {
					return Report{}, at.refuse(CodeTooManyDocuments, nil,
						"this is PDF %d of the request; the bridge accepts at most %d PDFs per request (each costs a page count): send the others in further requests.",
						rep.Documents, MaxDocumentsPerRequest)
				}
				err = checkDocument(ctx, at, doc, bare, gate)
			}
			if err != nil {
				return Report{}, err
			}
		}
	}
	return rep, nil
}

// documentOf returns the PDF of a document, file or input_file part, and
// whether it may be bare base64; ok is false for a part without the object
// its type needs.
func documentOf(p *schema.ContentPart) (doc string, bare, ok bool) {
	switch {
	case p.Type == "document" && p.DocumentURL != nil:
		return p.DocumentURL.URL, false, true
	case p.Type == "file" && p.File != nil && p.File.FileData != "":
		return p.File.FileData, true, true
	case p.Type == "input_file" && p.FileData != "":
		return p.FileData, true, true
	}
	return "", false, false
}

// where is the position of a part in the request.
type where struct{ msg, part int }

func (w where) param() string { return fmt.Sprintf("messages[%d].content[%d]", w.msg, w.part) }

// refuse returns the 400 for the part at w: its message is the part's path,
// ": " and the formatted text.
func (w where) refuse(code string, cause error, format string, args ...any) *schema.Error {
	p := w.param()
	return &schema.Error{
		Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: code, Param: p,
		Message: p + ": " + fmt.Sprintf(format, args...), Cause: cause,
	}
}

// warn returns a warning about the part at w, worded like refuse.
func (w where) warn(format string, args ...any) *Warning {
	p := w.param()
	return &Warning{Param: p, Message: p + ": " + fmt.Sprintf(format, args...)}
}

// size renders a byte count for a message: "5347738 bytes (5.1 MB)".
func size(n int) string { return fmt.Sprintf("%d bytes (%.1f MB)", n, float64(n)/(1<<20)) }

// clip shortens a caller's string for a message, so a long URL or media type
// is not echoed in full.
func clip(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	r := []rune(s[:limit])
	return string(r[:len(r)-1]) + "..."
}
