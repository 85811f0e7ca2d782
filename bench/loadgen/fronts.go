// Receivers on chatservice's other front ends: frames, WebSocket and IRC.
//
// fanout --mix lines,frames,web,irc spreads the receivers evenly (round
// robin by index) over the front ends named; senders stay line users on
// --addr. Each receiver registers with its own front end as a client of
// that front end would, and counts as ready once it saw its welcome:
//
//	lines   --hello / --ready, as every other receiver
//	frames  reads HELLO, sends an INPUT frame with the nickname, waits for
//	        the EVENT of type "welcome" (docs/frames.md); answers PINGs
//	web     GET /ws with the subprotocol chatservice.v1, sends the INPUT
//	        message, waits for the "welcome" EVENT (docs/web.md); answers
//	        pings
//	irc     NICK and USER, waits for 001 (docs/irc.md); answers PINGs
//
// Everyone starts in #lobby, where the line senders are. A receiver finds
// the "m <id> <seq> <ns>" token in each message it receives (a frame's or
// a WebSocket message's JSON, an IRC line), as line receivers do in a line.
package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Front ends a receiver may use.
const (
	feLines = iota
	feFrames
	feWeb
	feIRC
)

var feNames = map[string]int{"lines": feLines, "frames": feFrames, "web": feWeb, "irc": feIRC}

// mixConfig is where the front ends listen and which ones receivers use.
type mixConfig struct {
	kinds                        []int // receiver i uses kinds[i % len(kinds)]
	framesAddr, webAddr, ircAddr string
}

func parseMix(spec, framesAddr, webAddr, ircAddr string) *mixConfig {
	if spec == "" {
		return nil
	}
	m := &mixConfig{framesAddr: framesAddr, webAddr: webAddr, ircAddr: ircAddr}
	for _, name := range strings.Split(spec, ",") {
		k, ok := feNames[strings.TrimSpace(name)]
		if !ok {
			fatalf("--mix: unknown front end %q (lines, frames, web, irc)", name)
		}
		addr := map[int]string{feLines: "x", feFrames: framesAddr, feWeb: webAddr, feIRC: ircAddr}[k]
		if addr == "" {
			fatalf("--mix %s needs --%s-addr", name, name)
		}
		if k != feLines {
			checkLoopback("--"+name+"-addr", addr)
		}
		m.kinds = append(m.kinds, k)
	}
	return m
}

func checkLoopback(flagName, addr string) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		fatalf("bad %s: %v", flagName, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		fatalf("%s must be a loopback IP address, got %q", flagName, addr)
	}
}

func (m *mixConfig) kind(idx int) int {
	if m == nil {
		return feLines
	}
	return m.kinds[idx%len(m.kinds)]
}

func (m *mixConfig) names() []string {
	var out []string
	for _, k := range m.kinds {
		for name, v := range feNames {
			if v == k {
				out = append(out, name)
			}
		}
	}
	return out
}

// dialKind dials a receiver of front end kind and registers it.
func (cm *common) dialKind(m *mixConfig, idx int, deadline time.Time, bufSize int) (*conn, int, error) {
	kind := m.kind(idx)
	if kind == feLines {
		cn, k, err := cm.dialOne(idx, deadline, bufSize)
		if cn != nil {
			cn.kind = feLines
		}
		return cn, k, err
	}
	addr := map[int]string{feFrames: m.framesAddr, feWeb: m.webAddr, feIRC: m.ircAddr}[kind]
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, errDial, err
	}
	tc := nc.(*net.TCPConn)
	name := cm.prefix + fmt.Sprint(nextName())
	cn := &conn{c: tc, r: bufio.NewReaderSize(tc, bufSize), name: name, idx: idx, kind: kind}
	tc.SetDeadline(deadline)
	switch kind {
	case feFrames:
		err = framesHandshake(cn)
	case feWeb:
		err = webHandshake(cn, addr)
	case feIRC:
		err = ircHandshake(cn)
	}
	if err != nil {
		tc.Close()
		return nil, errHandshake, err
	}
	tc.SetDeadline(time.Time{})
	return cn, 0, nil
}

// ---------------------------------------------------------------- frames

const frameHeader = 8

func frameBytes(typ byte, body []byte) []byte {
	b := make([]byte, frameHeader, frameHeader+len(body))
	b[0], b[1], b[2], b[3] = 0xFA, 0xCE, 1, typ
	binary.BigEndian.PutUint32(b[4:], uint32(len(body)))
	return append(b, body...)
}

func jsonText(key, value string) []byte {
	b, _ := json.Marshal(map[string]string{key: value})
	return b
}

// readFrame reads one whole frame through the handshake reader.
func readFrame(r *bufio.Reader) (byte, []byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0] != 0xFA || h[1] != 0xCE {
		return 0, nil, errors.New("frames: bad magic")
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > 1<<20 {
		return 0, nil, errors.New("frames: frame too large")
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return h[3], body, err
}

var welcomeType = []byte(`"type":"welcome"`)

func framesHandshake(cn *conn) error {
	if _, err := cn.c.Write(frameBytes(2, jsonText("text", cn.name))); err != nil {
		return err
	}
	for {
		typ, body, err := readFrame(cn.r)
		if err != nil {
			return err
		}
		if typ == 4 { // ERROR
			return fmt.Errorf("frames: %s", body)
		}
		if typ == 3 && bytes.Contains(body, welcomeType) {
			return nil
		}
	}
}

// splitFrames hands each whole frame's body in buf to fn; PINGs are answered.
func splitFrames(cn *conn, fd uintptr, buf []byte, now int64, fn func([]byte, int64)) int {
	start := 0
	for len(buf)-start >= frameHeader {
		n := int(binary.BigEndian.Uint32(buf[start+4:]))
		if len(buf)-start < frameHeader+n {
			break
		}
		body := buf[start+frameHeader : start+frameHeader+n]
		switch buf[start+3] {
		case 3:
			fn(body, now)
		case 5: // PING: the same token back
			rawWrite(fd, frameBytes(6, body))
		}
		start += frameHeader + n
	}
	return start
}

// ---------------------------------------------------------------- WebSocket

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsClientFrame is one masked client frame of opcode op.
func wsClientFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

// wsHeader parses a server frame's header: its opcode, header length and
// payload length; ok is false if buf does not hold the whole header yet.
func wsHeader(buf []byte) (op byte, hlen, plen int, ok bool) {
	if len(buf) < 2 {
		return
	}
	op = buf[0] & 0x0F
	n := int(buf[1] & 0x7F)
	hlen = 2
	switch n {
	case 126:
		if len(buf) < 4 {
			return
		}
		n, hlen = int(binary.BigEndian.Uint16(buf[2:])), 4
	case 127:
		if len(buf) < 10 {
			return
		}
		n, hlen = int(binary.BigEndian.Uint64(buf[2:])), 10
	}
	if buf[1]&0x80 != 0 { // a masked server frame: not allowed, but skip the key
		hlen += 4
	}
	return op, hlen, n, true
}

func webHandshake(cn *conn, addr string) error {
	var raw [16]byte
	rand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: chatservice.v1\r\n\r\n"
	if _, err := cn.c.Write([]byte(req)); err != nil {
		return err
	}
	status, err := cn.r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, "HTTP/1.1 101") {
		return fmt.Errorf("web: %s", strings.TrimSpace(status))
	}
	sum := sha1.Sum([]byte(key + wsGUID))
	want := base64.StdEncoding.EncodeToString(sum[:])
	accepted := false
	for {
		line, err := cn.r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Accept") {
			accepted = strings.TrimSpace(v) == want
		}
	}
	if !accepted {
		return errors.New("web: no valid Sec-WebSocket-Accept")
	}
	input, _ := json.Marshal(map[string]string{"frame": "INPUT", "text": cn.name})
	if _, err := cn.c.Write(wsClientFrame(1, input)); err != nil {
		return err
	}
	for {
		var head [10]byte
		if _, err := io.ReadFull(cn.r, head[:2]); err != nil {
			return err
		}
		extra := map[byte]int{126: 2, 127: 8}[head[1]&0x7F]
		if _, err := io.ReadFull(cn.r, head[2:2+extra]); err != nil {
			return err
		}
		op, _, n, _ := wsHeader(head[:2+extra])
		if n > 1<<20 {
			return errors.New("web: message too large")
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(cn.r, payload); err != nil {
			return err
		}
		switch {
		case op == 8:
			return fmt.Errorf("web: closed: %q", payload)
		case op == 9:
			cn.c.Write(wsClientFrame(10, payload))
		case bytes.Contains(payload, []byte(`"frame":"ERROR"`)):
			return fmt.Errorf("web: %s", payload)
		case bytes.Contains(payload, welcomeType):
			return nil
		}
	}
}

// splitWeb hands each whole WebSocket message's payload in buf to fn; pings
// are answered. A close ends nothing here: the server closes the TCP
// connection after it, and the reader sees EOF.
func splitWeb(cn *conn, fd uintptr, buf []byte, now int64, fn func([]byte, int64)) int {
	start := 0
	for {
		op, hlen, plen, ok := wsHeader(buf[start:])
		if !ok || len(buf)-start < hlen+plen {
			return start
		}
		payload := buf[start+hlen : start+hlen+plen]
		switch op {
		case 1, 2:
			fn(payload, now)
		case 9:
			rawWrite(fd, wsClientFrame(10, payload))
		}
		start += hlen + plen
	}
}

// ---------------------------------------------------------------- IRC

func ircHandshake(cn *conn) error {
	hello := "NICK " + cn.name + "\r\nUSER " + cn.name + " 0 * :" + cn.name + "\r\n"
	if _, err := cn.c.Write([]byte(hello)); err != nil {
		return err
	}
	want := " 001 " + cn.name + " "
	for {
		line, err := cn.r.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.Contains(line, want) {
			return nil
		}
		if strings.HasPrefix(line, "ERROR") || strings.Contains(line, " 433 ") {
			return fmt.Errorf("irc: %s", strings.TrimSpace(line))
		}
	}
}

var ircPing = []byte("PING ")

// splitIRC hands each whole line in buf to fn; PINGs are answered.
func splitIRC(cn *conn, fd uintptr, buf []byte, now int64, fn func([]byte, int64)) int {
	start := 0
	for {
		i := bytes.IndexByte(buf[start:], '\n')
		if i < 0 {
			return start
		}
		line := buf[start : start+i+1]
		if bytes.HasPrefix(line, ircPing) {
			rawWrite(fd, append([]byte("PONG "), line[len(ircPing):]...))
		} else {
			fn(line, now)
		}
		start += i + 1
	}
}

// ---------------------------------------------------------------- reading

// rawWrite writes b on the non-blocking socket fd, best effort (a PONG).
func rawWrite(fd uintptr, b []byte) {
	for len(b) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return
		}
		b = b[n:]
	}
}

// readMessages is readLines for the frames, web and IRC receivers: one
// read(2) per wake-up, and fn called for every whole message (its body or
// payload, or an IRC line) with the time it was read. A message longer
// than bufSize ends the reading.
func readMessages(c *conn, bufSize int, fn func(msg []byte, now int64)) {
	var split func(*conn, uintptr, []byte, int64, func([]byte, int64)) int
	switch c.kind {
	case feFrames:
		split = splitFrames
	case feWeb:
		split = splitWeb
	default:
		split = splitIRC
	}
	buf := make([]byte, bufSize)
	filled := 0
	rc, err := c.c.SyscallConn()
	if err != nil {
		return
	}
	consume := func(fd uintptr, now int64) bool {
		used := split(c, fd, buf[:filled], now, fn)
		if used > 0 {
			filled = copy(buf, buf[used:filled])
		}
		return filled < len(buf)
	}
	// data already read into the handshake's bufio.Reader
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		if n > len(buf) {
			return
		}
		filled = copy(buf, b)
		var fd uintptr
		rc.Control(func(f uintptr) { fd = f })
		if !consume(fd, nowNs()) {
			return
		}
	}
	c.r = nil
	rc.Read(func(fd uintptr) bool {
		for {
			space := len(buf) - filled
			r1, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[filled])), uintptr(space))
			if e == syscall.EAGAIN {
				return false
			}
			if e == syscall.EINTR {
				continue
			}
			if e != 0 || r1 == 0 {
				return true
			}
			n := int(r1)
			filled += n
			if !consume(fd, nowNs()) {
				logf("%s: a message longer than %d bytes; receiver %d stops reading", c.name, len(buf), c.idx)
				return true
			}
			if n < space {
				return false
			}
		}
	})
}
