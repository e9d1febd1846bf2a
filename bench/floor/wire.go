package main

import "encoding/binary"

// A message is the body of one publish request, and what every subscriber of its board
// receives. The server writes it to each subscriber framed like a Connect envelope: a flags
// byte (0) and the message's length as a 4-byte big-endian integer, then the message.
//
// The message starts with a fixed header (little-endian); the rest is padding, so that it
// weighs what a Dispatch of one action does.
const (
	envelopeLen = 5

	offBoard  = 0  // uint32: the board, set by the publisher
	offSeq    = 4  // uint64: the board's sequence number, set by the server (1, 2, ...)
	offSentAt = 12 // int64: Unix ns when the publisher sent the request
	headerLen = 20

	maxMessageLen = 64 << 10
)

// newMessage returns a message of size bytes (at least headerLen) for board, stamped with
// sentAt (Unix ns). Its seq is 0 until the server sets it.
func newMessage(size int, board uint32, sentAt int64) []byte {
	msg := make([]byte, max(size, headerLen))
	binary.LittleEndian.PutUint32(msg[offBoard:], board)
	binary.LittleEndian.PutUint64(msg[offSentAt:], uint64(sentAt))
	for i := headerLen; i < len(msg); i++ {
		msg[i] = 'x'
	}
	return msg
}

func messageBoard(msg []byte) uint32       { return binary.LittleEndian.Uint32(msg[offBoard:]) }
func messageSeq(msg []byte) uint64         { return binary.LittleEndian.Uint64(msg[offSeq:]) }
func messageSentAt(msg []byte) int64       { return int64(binary.LittleEndian.Uint64(msg[offSentAt:])) }
func setMessageSeq(msg []byte, seq uint64) { binary.LittleEndian.PutUint64(msg[offSeq:], seq) }

// putEnvelope writes the envelope header of an n-byte message into frame[:envelopeLen].
func putEnvelope(frame []byte, n int) {
	frame[0] = 0
	binary.BigEndian.PutUint32(frame[1:envelopeLen], uint32(n))
}

// envelopeMessageLen returns the message length an envelope header announces.
func envelopeMessageLen(hdr []byte) int { return int(binary.BigEndian.Uint32(hdr[1:envelopeLen])) }
