package multimodal_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	mt "github.com/laas-bridge/laas-bridge/admission/multimodal/multimodaltest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// crafted are small valid one-page PDFs that cost a reader without limits
// a lot to open (measured before the budget, pdfcpu v0.15.0 with its
// default limits raised as the bridge had them: the first took 6 s and
// 256 MiB, the object stream floods up to 74 s and 5 GiB).
var crafted = sync.OnceValue(func() map[string][]byte {
	return map[string][]byte{
		// A Flate stream of 130 KB that inflates to 128 MiB, holding the
		// catalog.
		"inflating stream": mt.PDFInflating(128 << 20),
		// 16 object streams whose prologs inflate to 16 MiB each.
		"long object stream prologs": mt.PDFObjectStreams(16, 16<<20),
		// 200 object streams of 4,095 objects each.
		"object streams of many objects": mt.PDFObjectStreams(200, 16<<10-4),
		// 2,000 object streams of 512 objects, each within every limit.
		"many object streams": mt.PDFObjectStreams(2000, 2<<10),
		// One object stream named under 5,000 numbers.
		"one object stream under many numbers": mt.PDFAliasedObjectStream(5000),
		// 65 pages, each in an object stream of its own.
		"pages in many object streams": mt.PDFPagesInObjectStreams(65),
		// 1 MiB of "N 0 obj << /Type /Page ... >> endobj" lines and no
		// cross-reference table: pdfcpu repairs it by parsing every line.
		"damaged, 21,000 objects": mt.PDFDamaged(1 << 20),
	}
})

// measure runs Check on req and returns its error, how long it took and
// how many bytes it allocated (the process's, so no other test may run in
// parallel with it).
func measure(req *schema.ChatCompletionRequest) (error, time.Duration, uint64) {
	err, took, alloc, _ := measurePeak(req)
	return err, took, alloc
}

// measurePeak is measure, and also returns the peak of the heap in use
// above where it stood before the check, sampled every 200 µs while Check
// runs (runtime/metrics, which does not stop the world).
func measurePeak(req *schema.ChatCompletionRequest) (err error, took time.Duration, alloc, peak uint64) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	runtime.GC()
	metrics.Read(sample)
	base, allocBefore := sample[0].Value.Uint64(), sample[1].Value.Uint64()
	done := make(chan struct{})
	peakc := make(chan uint64)
	go func() {
		var top uint64
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			top = max(top, s[0].Value.Uint64())
			select {
			case <-done:
				peakc <- top
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	_, err = multimodal.Check(context.Background(), req)
	took = time.Since(start)
	close(done)
	top := <-peakc
	metrics.Read(sample)
	if top > base {
		peak = top - base
	}
	return err, took, sample[1].Value.Uint64() - allocBefore, peak
}

// TestDocumentTooComplex checks the budget of a PDF's page count: each
// crafted PDF is refused with 400 document_too_complex, having allocated
// under 64 MiB, and well within DocumentCheckTimeout (asserted loosely, for
// a busy machine; the time is logged).
func TestDocumentTooComplex(t *testing.T) {
	const maxAlloc = 64 << 20
	const msg = "the PDF is too complex to check: its structure needs more than the bridge allows for counting its pages " +
		"(1s of reading, 1 MB for one stream, 16384 objects). Save it again with a standard PDF writer (\"print to PDF\"), or split it."
	for name, data := range crafted() {
		t.Run(name, func(t *testing.T) {
			for _, part := range []schema.ContentPart{document(pdfURL(data)), file(b64(data))} {
				err, took, alloc := measure(user(parts(text("read"), part)))
				t.Logf("%s part of %d bytes: refused in %v, %.1f MiB allocated", part.Type, len(data), took, float64(alloc)/(1<<20))
				wantError(t, err, refused(0, 1, multimodal.CodeDocumentTooComplex, msg))
				if alloc > maxAlloc {
					t.Errorf("Check allocated %.1f MiB, want under %d MiB", float64(alloc)/(1<<20), maxAlloc>>20)
				}
				if took > 5*time.Second {
					t.Errorf("Check took %v, want about 1 s at most", took)
				}
			}
		})
	}
}

// TestDocumentTooComplexKeepsTheCause pins why each crafted PDF is refused,
// so that no case passes for another reason, including the wording of
// pdfcpu's limit errors that tooComplex matches.
func TestDocumentTooComplexKeepsTheCause(t *testing.T) {
	for name, want := range map[string]string{
		"inflating stream":                     "filter decode limit exceeded",
		"long object stream prologs":           "object stream First 16777216 exceeds limit 16384",
		"object streams of many objects":       "object stream object count 4095 exceeds limit 512",
		"many object streams":                  "the PDF has 2000 object streams, more than 256",
		"one object stream under many numbers": "it went back to an offset it had read more than 64 times",
		"pages in many object streams":         "the page tree lies in more than 64 object streams",
		"damaged, 21,000 objects":              "objects, more than 16384",
	} {
		_, err := multimodal.Check(context.Background(), user(parts(document(pdfURL(crafted()[name])))))
		var e *schema.Error
		if !errors.As(err, &e) || e.Cause == nil || !strings.Contains(e.Cause.Error(), want) {
			t.Errorf("%s: error %v (cause %v), want a cause containing %q", name, err, e.Cause, want)
		}
	}
}

// TestDamagedDocumentBudget: a file without a cross-reference table, which
// pdfcpu repairs by parsing every object it finds, costs a bounded peak of
// live heap beside its own decoded bytes, whatever its size: from 1 MiB
// up, it holds more objects than maxObjects and is refused before pdfcpu
// runs (measured before the count: 4 MiB, 1.5 s and 228 MiB of live heap;
// 31 MiB, 945 MiB). Just under the count (800 KiB, 16,000 objects), pdfcpu
// runs until its deadline; the answer then depends on the machine's speed,
// so only the peak is asserted.
func TestDamagedDocumentBudget(t *testing.T) {
	const maxPeak = 64 << 20
	for _, size := range []int{800 << 10, 1 << 20, 4 << 20, 16 << 20, 31 << 20} {
		t.Run(fmt.Sprintf("%d KiB", size>>10), func(t *testing.T) {
			data := mt.PDFDamaged(size)
			err, took, alloc, peak := measurePeak(user(parts(document(pdfURL(data)))))
			t.Logf("%d bytes: %v in %v, %.1f MiB allocated, peak heap %.1f MiB", size, err, took, float64(alloc)/(1<<20), float64(peak)/(1<<20))
			if peak > uint64(size)+maxPeak {
				t.Errorf("the check's peak heap is %.1f MiB, want under the document's %.1f MiB + %d MiB",
					float64(peak)/(1<<20), float64(size)/(1<<20), maxPeak>>20)
			}
			var e *schema.Error
			if !errors.As(err, &e) || e.Code != multimodal.CodeDocumentTooComplex && (size >= 1<<20 || e.Code != multimodal.CodeInvalidDocument) {
				t.Errorf("Check = %v, want 400 %s", err, multimodal.CodeDocumentTooComplex)
			}
			if size >= 1<<20 && alloc > uint64(2*size)+1<<20 {
				t.Errorf("Check allocated %.1f MiB, want about the document's size: refused before pdfcpu runs", float64(alloc)/(1<<20))
			}
		})
	}
}

// TestDocumentWithinBudget: object streams and a cross-reference stream,
// as modern writers make them, within the limits, are read and counted.
func TestDocumentWithinBudget(t *testing.T) {
	for _, data := range [][]byte{mt.PDFObjectStreams(200, 2<<10), mt.PDFAliasedObjectStream(10), mt.PDFPagesInObjectStreams(20)} {
		if rep, err := multimodal.Check(context.Background(), user(parts(document(pdfURL(data))))); err != nil || rep.Documents != 1 {
			t.Fatalf("Check = %+v, %v; want the PDF accepted", rep, err)
		}
	}
}

// TestBase64SizedBeforeDecoding: data over its part's limit is refused from
// its length, before a buffer of its decoded size is allocated.
func TestBase64SizedBeforeDecoding(t *testing.T) {
	huge := strings.Repeat("JVBE", 12<<20) // 48 MiB of base64, 36 MiB decoded
	withBreaks := huge[:1<<20] + "\r\n" + huge[1<<20:] + "\n"
	tests := []struct {
		name string
		part schema.ContentPart
		want *schema.Error
	}{
		{"document", document("data:application/pdf;base64," + huge),
			refused(0, 0, multimodal.CodeDocumentTooLarge, "the PDF is 37748736 bytes (36.0 MB); LaaS accepts at most 32 MB (33554432 bytes) per PDF.")},
		{"bare file_data with line breaks", file(withBreaks),
			refused(0, 0, multimodal.CodeDocumentTooLarge, "the PDF is 37748736 bytes (36.0 MB); LaaS accepts at most 32 MB (33554432 bytes) per PDF.")},
		{"image", image("data:image/png;base64," + huge[:8<<20]),
			refused(0, 0, multimodal.CodeImageTooLarge, "the image is 6291456 bytes (6.0 MB); LaaS accepts at most 4 MB (4194304 bytes) per image.")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err, _, alloc := measure(user(parts(tc.part)))
			wantError(t, err, tc.want)
			if alloc > 1<<20 {
				t.Errorf("Check allocated %.1f MiB refusing it, want under 1 MiB (nothing decoded)", float64(alloc)/(1<<20))
			}
		})
	}
}

// TestBase64BufferSizedWithoutLineBreaks: the decoding buffer is the size
// of the decoded data, not of the text: 40 MiB of line breaks around one
// byte of data allocate no more than the text's own scan needs (a buffer
// sized from the text's length took 30 MiB).
func TestBase64BufferSizedWithoutLineBreaks(t *testing.T) {
	payload := "JVBE" + strings.Repeat("\n", 40<<20) + "Rg=="
	err, _, alloc := measure(user(parts(file(payload))))
	wantError(t, err, refused(0, 0, multimodal.CodeInvalidDocument, "the document is not a PDF: it has no %PDF- header."))
	if alloc > 1<<20 {
		t.Errorf("Check allocated %.1f MiB decoding 4 bytes, want under 1 MiB", float64(alloc)/(1<<20))
	}
}

// BenchmarkCheckDocument measures one PDF part's check, crafted and normal:
//
//	go test -run '^$' -bench BenchmarkCheckDocument -benchmem ./admission/multimodal
func BenchmarkCheckDocument(b *testing.B) {
	cases := []struct {
		name string
		data []byte
	}{
		{"crafted/inflating_stream", crafted()["inflating stream"]},
		{"crafted/long_object_stream_prologs", crafted()["long object stream prologs"]},
		{"crafted/many_object_streams", crafted()["many object streams"]},
		{"crafted/one_object_stream_under_many_numbers", crafted()["one object stream under many numbers"]},
		{"normal/20_pages", fixtures()["pdf 20"]},
		{"normal/200_object_streams", mt.PDFObjectStreams(200, 2<<10)},
		{"normal/32MB", fixtures()["pdf 32MB"]},
	}
	for _, c := range cases {
		req := user(parts(document(pdfURL(c.data))))
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := multimodal.Check(context.Background(), req); err != nil && c.name[:6] == "normal" {
					b.Fatal(err)
				}
			}
		})
	}
}
