// Package multimodaltest builds images and PDFs of exact sizes and page
// counts for tests of the LaaS limits: valid files, made with the standard
// library (PNG, JPEG) or by hand (PDF), so that no test needs checked-in
// binaries. Its functions panic on arguments they cannot satisfy, as
// test helpers do.
package multimodaltest

import (
	"bytes"
	"compress/zlib"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
)

// PNG returns a valid w x h PNG. When size > 0 the file is padded to exactly
// size bytes with a private ancillary chunk ("laAs"), which decoders skip;
// size must then leave room for the chunk (a few hundred bytes at least).
func PNG(w, h, size int) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, pattern(w, h)); err != nil {
		panic(fmt.Sprintf("multimodaltest: png: %v", err))
	}
	b := buf.Bytes()
	if size <= 0 {
		return b
	}
	const iend = 12 // the IEND chunk ends every PNG
	pad := size - len(b) - 12
	if pad < 0 {
		panic(fmt.Sprintf("multimodaltest: a %dx%d PNG is %d bytes, more than %d", w, h, len(b), size))
	}
	chunk := make([]byte, 12+pad)
	binary.BigEndian.PutUint32(chunk, uint32(pad))
	copy(chunk[4:], "laAs")
	binary.BigEndian.PutUint32(chunk[8+pad:], crc32.ChecksumIEEE(chunk[4:8+pad]))
	out := make([]byte, 0, size)
	out = append(out, b[:len(b)-iend]...)
	out = append(out, chunk...)
	return append(out, b[len(b)-iend:]...)
}

// JPEG returns a valid w x h baseline JPEG.
func JPEG(w, h int) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, pattern(w, h), &jpeg.Options{Quality: 50}); err != nil {
		panic(fmt.Sprintf("multimodaltest: jpeg: %v", err))
	}
	return buf.Bytes()
}

func pattern(w, h int) image.Image {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetGray(x, y, color.Gray{Y: uint8(x*7 + y*13)})
		}
	}
	return img
}

// PDF returns a valid PDF 1.4 with the given number of blank pages, in a flat
// page tree whose /Count is right. When size > 0 the file is padded to
// exactly size bytes with an unreferenced stream object.
func PDF(pages, size int) []byte {
	return PDFTree(size, pages)
}

// PDFTree returns a valid PDF whose page tree root has one intermediate
// /Pages node per entry of groups, holding that many pages (a single entry
// gives a flat tree). size pads it as PDF does.
func PDFTree(size int, groups ...int) []byte {
	return build(size, nil, groups)
}

// PDFWithCount is PDFTree with a root /Count of count, whatever the tree
// holds: a PDF that lies about its page count.
func PDFWithCount(count, size int, groups ...int) []byte {
	return build(size, &count, groups)
}

func build(size int, count *int, groups []int) []byte {
	if size <= 0 {
		return pdf(0, count, groups)
	}
	// The padding changes only the digits of the xref offset after it:
	// converge on the exact size, closing a gap of one byte (the offset
	// gaining a digit) with a line break after %%EOF.
	pad := max(0, size-len(pdf(0, count, groups)))
	for range 4 {
		b := pdf(pad, count, groups)
		switch d := size - len(b); {
		case d == 0:
			return b
		case d == 1:
			return append(b, '\n')
		case pad+d < 0:
			panic(fmt.Sprintf("multimodaltest: a PDF of %v pages is more than %d bytes", groups, size))
		default:
			pad += d
		}
	}
	panic(fmt.Sprintf("multimodaltest: cannot pad a PDF to %d bytes", size))
}

// pdf writes the file: catalog (1), page tree root (2), then each group's
// node and pages, then the padding stream when pad > 0, then the xref table.
func pdf(pad int, count *int, groups []int) []byte {
	var b bytes.Buffer
	var offsets []int
	obj := func(body string) {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", len(offsets), body)
	}
	b.WriteString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	total := 0
	for _, g := range groups {
		total += g
	}
	if count != nil {
		total = *count
	}
	flat := len(groups) == 1
	// Object numbers: 3.. for the group nodes (when not flat), then pages.
	next := 3
	var rootKids []string
	type group struct{ node, first, n int }
	var gs []group
	for _, g := range groups {
		gr := group{n: g}
		if !flat {
			gr.node = next
			next++
			rootKids = append(rootKids, fmt.Sprintf("%d 0 R", gr.node))
		}
		gs = append(gs, gr)
	}
	for i := range gs {
		gs[i].first = next
		next += gs[i].n
		if flat {
			for p := range gs[i].n {
				rootKids = append(rootKids, fmt.Sprintf("%d 0 R", gs[i].first+p))
			}
		}
	}
	obj("<< /Type /Catalog /Pages 2 0 R >>")
	obj(fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(rootKids, " "), total))
	if !flat {
		for _, g := range gs {
			var kids []string
			for p := range g.n {
				kids = append(kids, fmt.Sprintf("%d 0 R", g.first+p))
			}
			obj(fmt.Sprintf("<< /Type /Pages /Parent 2 0 R /Kids [%s] /Count %d >>", strings.Join(kids, " "), g.n))
		}
	}
	for _, g := range gs {
		parent := 2
		if !flat {
			parent = g.node
		}
		for range g.n {
			obj(fmt.Sprintf("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << >> >>", parent))
		}
	}
	if pad > 0 {
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, "%d 0 obj\n<< /Length %010d >>\nstream\n", len(offsets), pad)
		b.Write(bytes.Repeat([]byte{'x'}, pad))
		b.WriteString("\nendstream\nendobj\n")
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(offsets)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(offsets)+1, xref)
	return b.Bytes()
}

// DataURL returns "data:<mediaType>;base64,<standard base64 of data>".
func DataURL(mediaType string, data []byte) string {
	return "data:" + mediaType + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// Digest returns the first 16 hex digits of the SHA-256 of data, as the
// LaaS mock reports the bytes it received.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])[:16]
}

// PDFInflating returns a valid one-page PDF 1.5 whose catalog is kept in an
// object stream (with a cross-reference stream) compressed with Flate: the
// stream inflates to the catalog followed by inflated bytes of spaces, so a
// reader that inflates it whole spends inflated bytes on a file of a few
// hundred KB (the deflate format's ratio is about 1000:1). The compressed
// stream is built once per size and shared: inflated is a multiple of 1 MiB.
func PDFInflating(inflated int) []byte {
	if inflated <= 0 || inflated%(1<<20) != 0 {
		panic(fmt.Sprintf("multimodaltest: inflated size %d is not a positive multiple of 1 MiB", inflated))
	}
	const catalog = "<< /Type /Catalog /Pages 2 0 R >>"
	var z bytes.Buffer
	w, err := zlib.NewWriterLevel(&z, zlib.BestCompression)
	if err != nil {
		panic(err)
	}
	prolog := "1 0 "
	w.Write([]byte(prolog + catalog))
	spaces := bytes.Repeat([]byte{' '}, 1<<20)
	for range inflated >> 20 {
		w.Write(spaces)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return pdf15([]string{
		"", // 1: the catalog, in object stream 4
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> >>",
		fmt.Sprintf("<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream", len(prolog), z.Len(), z.Bytes()),
	}, map[int][2]int{1: {4, 0}})
}

// PDFObjectStreams returns a valid one-page PDF 1.5 with n object streams
// beside its page tree, each holding one small object behind a prolog of
// first bytes ("5 0 5 0 ..." pairs, Flate-compressed to a few hundred
// bytes): a reader that decodes every object stream's prolog spends n *
// first bytes, and more to split them, on a file of about n * (first/1000
// + 200) bytes.
func PDFObjectStreams(n, first int) []byte {
	z := deflate(zlib.BestCompression, bytes.Repeat([]byte("0 0 "), first/4), []byte("null"))
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> >>",
	}
	compressed := make(map[int][2]int, n)
	for i := range n {
		objs = append(objs, fmt.Sprintf("<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream",
			first/4*4, z.Len(), z.Bytes()))
		compressed[4+n+i] = [2]int{4 + i, 0}
	}
	return pdf15(objs, compressed)
}

// pdf15 writes a PDF 1.5: objs[i] is object i+1 (an empty string for an
// object kept in an object stream), compressed maps an object number to
// its object stream and index; a cross-reference stream (no filter) lists
// them all.
func pdf15(objs []string, compressed map[int][2]int) []byte { return pdf15x(objs, compressed, nil) }

// pdf15x is pdf15 where aliases maps an object number to the object whose
// offset it is given in the cross-reference stream.
func pdf15x(objs []string, compressed map[int][2]int, aliases map[int]int) []byte {
	var b bytes.Buffer
	b.WriteString("%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
	size := len(objs) + 1
	for nr := range compressed {
		size = max(size, nr+1)
	}
	for nr := range aliases {
		size = max(size, nr+1)
	}
	offsets := make([]int, size)
	for i, o := range objs {
		if o == "" {
			continue
		}
		offsets[i+1] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	for nr, to := range aliases {
		offsets[nr] = offsets[to]
	}
	xrefNr := size
	size++
	offsets = append(offsets, b.Len())
	var rows bytes.Buffer
	for nr := range size {
		var row [7]byte
		switch c, ok := compressed[nr]; {
		case nr == 0:
			row = [7]byte{0, 0, 0, 0, 0, 0xff, 0xff}
		case ok:
			row[0] = 2
			binary.BigEndian.PutUint32(row[1:5], uint32(c[0]))
			binary.BigEndian.PutUint16(row[5:7], uint16(c[1]))
		case offsets[nr] == 0:
			row = [7]byte{0, 0, 0, 0, 0, 0xff, 0xff}
		default:
			row[0] = 1
			binary.BigEndian.PutUint32(row[1:5], uint32(offsets[nr]))
		}
		rows.Write(row[:])
	}
	fmt.Fprintf(&b, "%d 0 obj\n<< /Type /XRef /Size %d /W [1 4 2] /Root 1 0 R /Length %d >>\nstream\n", xrefNr, size, rows.Len())
	b.Write(rows.Bytes())
	fmt.Fprintf(&b, "\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n", offsets[xrefNr])
	return b.Bytes()
}

// PDFAliasedObjectStream returns a valid one-page PDF 1.5 whose
// cross-reference stream names one object stream (of 500 objects, within
// any reader's limits) under n object numbers, each holding one compressed
// object: a reader that decodes each object stream it is told of decodes
// that one n times.
func PDFAliasedObjectStream(n int) []byte {
	var prolog bytes.Buffer
	for range 500 {
		prolog.WriteString("0 0 ")
	}
	z := deflate(zlib.DefaultCompression, prolog.Bytes(), []byte("null"))
	objs := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> >>",
		fmt.Sprintf("<< /Type /ObjStm /N 500 /First %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream", prolog.Len(), z.Len(), z.Bytes()),
	}
	compressed := make(map[int][2]int, n)
	aliases := make(map[int]int, n)
	for i := range n {
		aliases[5+i] = 4
		compressed[5+n+i] = [2]int{5 + i, 0}
	}
	return pdf15x(objs, compressed, aliases)
}

// PDFPagesInObjectStreams returns a valid PDF 1.5 of the given number of
// pages, each kept in an object stream of its own.
func PDFPagesInObjectStreams(pages int) []byte {
	objs := []string{"<< /Type /Catalog /Pages 2 0 R >>", ""}
	var kids []string
	compressed := make(map[int][2]int, pages)
	for i := range pages {
		page := 3 + pages + i
		kids = append(kids, fmt.Sprintf("%d 0 R", page))
		body := "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> >>"
		prolog := fmt.Sprintf("%d 0 ", page)
		z := deflate(zlib.DefaultCompression, []byte(prolog+body))
		objs = append(objs, fmt.Sprintf("<< /Type /ObjStm /N 1 /First %d /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream", len(prolog), z.Len(), z.Bytes()))
		compressed[page] = [2]int{3 + i, 0}
	}
	objs[1] = fmt.Sprintf("<< /Type /Pages /Kids [%s] /Count %d >>", strings.Join(kids, " "), pages)
	return pdf15(objs, compressed)
}

// PDFDamaged returns a file of size bytes (at least 64) that a reader can
// only open by repairing it: a "%PDF-1.4" header, then lines
// "N 0 obj << /Type /Page /Parent 2 0 R >> endobj" up to size, and no
// cross-reference table, so a reader rebuilds one by scanning every line
// and parsing every object.
func PDFDamaged(size int) []byte {
	if size < 64 {
		panic(fmt.Sprintf("multimodaltest: damaged PDF size %d is under 64 bytes", size))
	}
	b := bytes.NewBufferString("%PDF-1.4\n")
	for n := 1; ; n++ {
		line := fmt.Sprintf("%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n", n)
		if b.Len()+len(line) > size {
			break
		}
		b.WriteString(line)
	}
	b.WriteString(strings.Repeat(" ", size-b.Len()))
	return b.Bytes()
}

// deflate is parts compressed as a /FlateDecode stream, at level.
func deflate(level int, parts ...[]byte) *bytes.Buffer {
	var z bytes.Buffer
	w, err := zlib.NewWriterLevel(&z, level)
	if err != nil {
		panic(err)
	}
	for _, p := range parts {
		_, _ = w.Write(p)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return &z
}
