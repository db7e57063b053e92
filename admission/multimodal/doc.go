// Package multimodal enforces the limits LaaS documents for images and PDF
// documents in a chat request (../shared/laas-api.md, "Documented limits"),
// so that a request LaaS would refuse is refused with a clear 400 before
// anything is queued.
//
// Check runs after (*schema.ChatCompletionRequest).Validate, which has
// already checked the structure of every content part; Check looks inside
// the URLs and the data. Package schema itself stays free of third-party
// imports: the PDF reader (github.com/pdfcpu/pdfcpu) is used here only.
//
// # What is checked
//
// Parts are checked in order, message by message and part by part; the
// first problem found is returned. Each refusal is a 400 *schema.Error of
// type invalid_request_error whose Param is "messages[i].content[j]", whose
// Message starts with that same path and names the limit, and whose Code is
// one of the Code constants of this package.
//
// Images ("image_url" parts, in messages of any role):
//
//   - at most MaxImagesPerMessage per message (CodeTooManyImages, on the first
//     image over the limit, before its data is looked at);
//   - the URL is an https URL with a host (not fetched) or a data URL; an
//     http URL or any other scheme is refused (CodeUnsupportedURL);
//   - a data URL declares image/jpeg or image/png (CodeUnsupportedMediaType),
//     is base64 (see below), decodes to at most MaxImageBytes
//     (CodeImageTooLarge), has bytes whose sniffed type
//     (net/http.DetectContentType) equals the declared one
//     (CodeMediaTypeMismatch), and has a header image.DecodeConfig can read
//     (CodeInvalidImage);
//   - a longest side above RecommendedMaxImageSide pixels is not an error:
//     it is reported as a Warning in the Report.
//
// PDF documents ("document" parts' document_url.url, "file" parts'
// file.file_data, "input_file" parts' file_data):
//
//   - at most MaxDocumentsPerRequest in the whole request
//     (CodeTooManyDocuments, on the first document over the limit, before
//     its data is looked at);
//   - a data URL declaring application/pdf (CodeUnsupportedMediaType); a
//     document_url that is not a data URL is refused (CodeUnsupportedURL),
//     as is a file_data that looks like a URL ("scheme://..."). file_data
//     without the "data:" prefix is bare base64 and taken as a PDF;
//   - decodes to at most MaxDocumentBytes (CodeDocumentTooLarge);
//   - has the "%PDF-" header within its first 1024 bytes and can be read by
//     pdfcpu in relaxed mode (CodeInvalidDocument: damaged, encrypted with a
//     user password, or not a PDF at all);
//   - has between 1 and MaxDocumentPages pages (CodeInvalidDocument for none,
//     CodeTooManyPages above the limit). Pages are counted by walking the
//     document's page tree and counting its leaves, so a /Count entry that
//     disagrees with the tree is not believed.
//   - can be read, and its pages counted, within a budget
//     (CodeDocumentTooComplex): DocumentCheckTimeout of reading, a second
//     more for each 4 MB past the first 4 MB; at most 1 MB inflated from
//     any one stream; at most 256 object streams, each of at most 512
//     objects and a 16 KB prolog, and a page tree in at most 64 of them;
//     at most 16,384 objects (the "obj" keywords of the file, counted
//     before pdfcpu runs, and the cross-reference entries); and a reader that may not go back to an
//     offset it has read more than 64 times. pdfcpu opens a whole document
//     before its page tree can be walked, and without a budget a valid
//     one-page PDF of a few hundred KB cost it seconds to minutes and up
//     to gigabytes; the budget is sized on real documents, which stay far
//     below it (budget.go).
//
// # Data URLs and base64
//
// A data URL is "data:<media type>[;<parameter>...];base64,<data>". The
// scheme, the media type and the ";base64" marker are matched without
// regard to case; parameters (";name=a.pdf") are allowed. A data URL with no
// comma, no media type, no ";base64" or a malformed media type is refused
// (CodeInvalidDataURL).
//
// The data must be standard base64 with padding (RFC 4648 section 4,
// encoding/base64.StdEncoding); line breaks (CR, LF) are ignored, as
// StdEncoding ignores them. Missing padding is not tolerated: the bridge
// forwards the data to LaaS unchanged, so it accepts only what every
// standard decoder accepts, instead of passing on data LaaS's own decoder
// may refuse with a less helpful error. Anything else is refused
// (CodeInvalidBase64).
//
// The size a part decodes to is computed from the length of its base64
// text (line breaks left out, padding taken off) before anything is
// decoded: data over its part's limit (CodeImageTooLarge,
// CodeDocumentTooLarge) is refused without a buffer being allocated for it.
//
// Each part's data is decoded once, by a streaming decoder that reads the
// request's string in place into one buffer of the decoded size, which is
// dropped once the part is checked: a 32 MB PDF costs one 32 MB buffer, not
// copies of its 43 MB base64 text.
package multimodal
