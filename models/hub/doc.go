// Package hub talks to the Hugging Face hub, or a mirror of it: it lists a
// repository's files, asks the hub what a file is (its commit, size and,
// for files kept in Git LFS, its sha256), and downloads a file into a
// partial file that survives an interruption and is resumed with an HTTP
// Range request the next time.
//
// The hub's contract, as its own client (huggingface_hub) uses it:
//
//   - GET or HEAD {endpoint}/{repo}/resolve/{revision}/{path} answers a
//     file. An LFS file is a redirect (302) to a CDN, carrying X-Repo-Commit,
//     X-Linked-Etag (the file's sha256 in quotes) and X-Linked-Size. A file
//     kept in git itself is answered directly, with an ETag that is its git
//     blob id (sha1), not a sha256. A renamed repository answers with a
//     relative redirect to its new name, which is followed.
//   - GET {endpoint}/api/models/{repo}/tree/{revision}?recursive=true lists
//     files as JSON ({"type","path","size","oid","lfs":{"oid","size"}}),
//     paginated by a Link header with rel="next".
//   - 404 answers carry X-Error-Code (RepoNotFound, EntryNotFound,
//     RevisionNotFound); 401 means a private or gated repository (or one
//     that does not exist) asked for without a token.
//
// Nothing here writes outside the partial file it is given; installing a
// verified download is the model store's job (package models/store).
// Package hubtest imitates the hub for tests.
package hub
