package multimodal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/model"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/types"
)

const (
	mediaPDF        = "application/pdf"
	documentExample = "data:application/pdf;base64,"
	// pdfHeaderWindow is how far into a file its "%PDF-" header may start,
	// as PDF readers allow.
	pdfHeaderWindow = 1024
	// maxPageTreeDepth bounds the page tree walk; real trees are a few
	// levels deep.
	maxPageTreeDepth = 64
)

// checkDocument checks one PDF given as s: a data URL, or, when bare is
// true (file_data), possibly bare base64.
func checkDocument(ctx context.Context, at where, s string, bare bool) error {
	payload := s
	switch {
	case hasDataScheme(s):
		d, err := parseDataURL(at, s, "document", documentExample)
		if err != nil {
			return err
		}
		if d.mediaType != mediaPDF {
			return at.refuse(CodeUnsupportedMediaType, nil,
				"the document's media type is %s; LaaS accepts only PDF documents (application/pdf).", clip(d.mediaType))
		}
		payload = d.payload
	case !bare:
		return at.refuse(CodeUnsupportedURL, nil,
			"the document is not a data URL; LaaS accepts PDFs only inline, as data:application/pdf;base64 URLs, not by remote URL.")
	case strings.Contains(s, "://"):
		return at.refuse(CodeUnsupportedURL, nil,
			"the file_data is a URL; LaaS accepts PDFs only inline: send the file's bytes as base64.")
	}
	data, err := decodeBase64(payload)
	if err != nil {
		return at.refuse(CodeInvalidBase64, err,
			"the document's data is not valid base64; send standard base64 with padding (RFC 4648).")
	}
	if len(data) > MaxDocumentBytes {
		return at.refuse(CodeDocumentTooLarge, nil,
			"the PDF is %s; LaaS accepts at most 32 MB (%d bytes) per PDF.", size(len(data)), MaxDocumentBytes)
	}
	if !bytes.Contains(data[:min(len(data), pdfHeaderWindow)], []byte("%PDF-")) {
		return at.refuse(CodeInvalidDocument, nil, "the document is not a PDF: it has no %%PDF- header.")
	}
	pages, err := countPages(ctx, data)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return at.refuse(CodeInvalidDocument, err,
			"the document could not be read as a PDF (it is damaged, or encrypted with a password); LaaS accepts readable PDFs only.")
	case pages == 0:
		return at.refuse(CodeInvalidDocument, nil, "the PDF has no pages.")
	case pages > MaxDocumentPages:
		return at.refuse(CodeTooManyPages, nil,
			"the PDF has %d pages; LaaS accepts at most %d pages per PDF.", pages, MaxDocumentPages)
	}
	return nil
}

// countPages reads data with pdfcpu and counts the leaves of its page tree.
// pdfcpu is a parser of hostile input here: a panic inside it is an
// unreadable PDF, not a crash of the gateway.
func countPages(ctx context.Context, data []byte) (pages int, err error) {
	defer func() {
		if r := recover(); r != nil {
			pages, err = 0, fmt.Errorf("the PDF reader panicked: %v", r)
		}
	}()
	pdf, err := pdfcpu.ReadWithContext(ctx, bytes.NewReader(data), readConfig())
	if err != nil {
		return 0, err
	}
	root, err := pdf.XRefTable.Catalog()
	if err != nil {
		return 0, err
	}
	tree, ok := root.Find("Pages")
	if !ok {
		return 0, errors.New("the document catalog has no page tree")
	}
	w := pageWalk{xref: pdf.XRefTable, seen: make(map[int]bool)}
	if err := w.walk(tree, 0); err != nil {
		return 0, err
	}
	return w.pages, nil
}

// readConfig is pdfcpu's configuration for reading an untrusted PDF: relaxed
// validation, as real-world PDFs need, no network, and resource limits
// sized for a 32 MB file. It is built here rather than by
// model.NewDefaultConfiguration, which installs a configuration directory,
// fonts and certificates under the user's home.
func readConfig() *model.Configuration {
	limits := model.DefaultResourceLimits()
	limits.MaxObjectCount = 4 << 20
	limits.MaxXRefEntries = 4 << 20
	limits.MaxObjectStreamCount = 1 << 20
	limits.MaxDecodeBytes = 64 << 20
	return &model.Configuration{
		Reader15:       true,
		ValidationMode: model.ValidationRelaxed,
		Eol:            types.EolLF,
		Offline:        true,
		Limits:         limits,
	}
}

// pageWalk counts the pages of a page tree: its leaves, whatever the /Count
// entries claim. A node reached twice (a cycle) or a tree deeper than
// maxPageTreeDepth is an error.
type pageWalk struct {
	xref  *model.XRefTable
	seen  map[int]bool
	pages int
}

func (w *pageWalk) walk(o types.Object, depth int) error {
	if depth > maxPageTreeDepth {
		return fmt.Errorf("the page tree is deeper than %d levels", maxPageTreeDepth)
	}
	if ref, ok := o.(types.IndirectRef); ok {
		nr := ref.ObjectNumber.Value()
		if w.seen[nr] {
			return fmt.Errorf("the page tree reaches object %d twice", nr)
		}
		w.seen[nr] = true
	}
	node, err := w.xref.DereferenceDict(o)
	if err != nil {
		return err
	}
	if node == nil {
		return errors.New("the page tree has a missing node")
	}
	kids, hasKids := node.Find("Kids")
	switch typ := node.Type(); {
	case typ != nil && *typ == "Pages", typ == nil && hasKids:
		arr, err := w.xref.DereferenceArray(kids)
		if err != nil {
			return err
		}
		for _, kid := range arr {
			if err := w.walk(kid, depth+1); err != nil {
				return err
			}
		}
	case typ == nil, *typ == "Page":
		w.pages++
	default:
		return fmt.Errorf("the page tree holds a /%s object", *typ)
	}
	return nil
}
