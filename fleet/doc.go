// Package fleet is the Batch API's work spread over many owl processes
// on NATS JetStream, and the batch formats both ways of running a batch
// share.
//
// A batch's lines (Line) run through an owl server's own endpoints and
// come back as results (Result) appended to its output and error files
// (ResultFile): written durably, each line once however often it ran.
// With no cluster the server runs them itself. With one (Cluster), a
// server puts each line, made ready to run (Request), on a work-queue
// stream under the subject owl.line.KIND.MODEL.BATCH.LINE; workers
// (Cluster.Work, behind owl worker) hold a durable consumer per model and
// kind of work they hold, so a line goes only to a worker that can run
// it; a worker stores the line's result in a key-value bucket keyed
// BATCH.LINE before acknowledging it, so a line is never lost and a line
// run twice overwrites its result; the server collects results into the
// batch's files and takes them out of the bucket. A worker signals
// progress while a line runs (long transcriptions keep their line); a
// line handed out MaxDeliver times without a result ends in the batch's
// error file with why, and a copy on the dead-letter stream
// (owl.dead.BATCH). Workers advertise their models in a bucket whose
// entries expire when their heartbeats stop.
package fleet
