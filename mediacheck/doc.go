// Package mediacheck holds the tests of what viewers get back: real
// publishers (ffmpeg and GStreamer over RTSP, ffmpeg's segments uploaded
// as a Bridge does) record into a real vigil node, and every output
// (stored segments, HLS run by run, clips) is decoded with ffmpeg. It has
// no code of its own.
package mediacheck
