package multimodal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
// true (file_data), possibly bare base64. It decodes and reads the PDF
// holding one of gate's slots.
func checkDocument(ctx context.Context, at where, s string, bare bool, gate *Checker) error {
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
	if n := decodedSize(payload); n > MaxDocumentBytes {
		return at.refuse(CodeDocumentTooLarge, nil,
			"the PDF is %s; LaaS accepts at most 32 MB (%d bytes) per PDF.", size(n), MaxDocumentBytes)
	}
	if err := gate.acquire(ctx); err != nil {
		return err
	}
	defer gate.release()
	data, err := decodeBase64(payload)
	if err != nil {
		return at.refuse(CodeInvalidBase64, err,
			"the document's data is not valid base64; send standard base64 with padding (RFC 4648).")
	}
	if !bytes.Contains(data[:min(len(data), pdfHeaderWindow)], []byte("%PDF-")) {
		return at.refuse(CodeInvalidDocument, nil, "the document is not a PDF: it has no %%PDF- header.")
	}
	pages, err := countPages(ctx, data)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case tooComplex(err):
		return at.refuse(CodeDocumentTooComplex, err,
			"the PDF is too complex to check: its structure needs more than the bridge allows for counting its pages (%s of reading, %d MB for one stream, %d objects). Save it again with a standard PDF writer (\"print to PDF\"), or split it.",
			checkTimeout(len(data)), maxDecodedStream>>20, maxObjects)
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

// countPages reads data with pdfcpu and counts the leaves of its page tree,
// within the budget of budget.go: checkTimeout and pdfcpu's
// lowered limits; an error that tooComplex recognises means the budget ran
// out. pdfcpu is a parser of hostile input here: a panic inside it is an
// unreadable PDF, not a crash of the gateway.
func countPages(ctx context.Context, data []byte) (pages int, err error) {
	return countPagesWithin(ctx, data, checkTimeout(len(data)))
}

// countPagesWithin is countPages with a deadline of timeout.
func countPagesWithin(ctx context.Context, data []byte, timeout time.Duration) (pages int, err error) {
	defer func() {
		if r := recover(); r != nil {
			pages, err = 0, fmt.Errorf("the PDF reader panicked: %v", r)
		}
	}()
	if n := objectKeywords(data); n > maxObjects {
		return 0, fmt.Errorf("%w: the PDF has %d objects, more than %d", errOverBudget, n, maxObjects)
	}
	if n := objectStreams(data); n > maxObjectStreams {
		return 0, fmt.Errorf("%w: the PDF has %d object streams, more than %d", errOverBudget, n, maxObjectStreams)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rs := newBudgetReader(ctx, data)
	pdf, err := pdfcpu.ReadWithContext(ctx, rs, readConfig())
	if rs.over != nil {
		// pdfcpu may have reported the failed read as another fault.
		err = rs.over
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: %w", errOverBudget, err)
		}
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
	w := pageWalk{ctx: ctx, xref: pdf.XRefTable, seen: make(map[int]bool), streams: make(map[int]bool)}
	if err := w.walk(tree, 0); err != nil {
		return 0, err
	}
	return w.pages, nil
}

// pageWalk counts the pages of a page tree: its leaves, whatever the /Count
// entries claim. A node reached twice (a cycle) or a tree deeper than
// maxPageTreeDepth is an error. It stops, over the budget, when ctx ends or
// when its nodes lie in more than maxWalkObjectStreams object streams: each
// is inflated whole (up to maxDecodedStream) when a node in it is read.
type pageWalk struct {
	ctx     context.Context
	xref    *model.XRefTable
	seen    map[int]bool
	streams map[int]bool // the object streams of the nodes read
	pages   int
}

func (w *pageWalk) walk(o types.Object, depth int) error {
	if depth > maxPageTreeDepth {
		return fmt.Errorf("the page tree is deeper than %d levels", maxPageTreeDepth)
	}
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", errOverBudget, err)
	}
	if ref, ok := o.(types.IndirectRef); ok {
		nr := ref.ObjectNumber.Value()
		if w.seen[nr] {
			return fmt.Errorf("the page tree reaches object %d twice", nr)
		}
		w.seen[nr] = true
		if e, ok := w.xref.Table[nr]; ok && e != nil && e.ObjectStream != nil && !w.streams[*e.ObjectStream] {
			if w.streams[*e.ObjectStream] = true; len(w.streams) > maxWalkObjectStreams {
				return fmt.Errorf("%w: the page tree lies in more than %d object streams", errOverBudget, maxWalkObjectStreams)
			}
		}
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
