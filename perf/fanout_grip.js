// GRIP backend for Pushpin's WebSocket-over-HTTP (perf/fanout_peers.sh): answers each
// OPEN event by accepting the connection and subscribing it to the channel "bench";
// any other event gets an empty 200. Usage: node fanout_grip.js PORT
const http = require("http");
const port = Number(process.argv[2] || 5021);
const sub = 'c:{"type":"subscribe","channel":"bench"}';
const openBody = `OPEN\r\nTEXT ${Buffer.byteLength(sub).toString(16)}\r\n${sub}\r\n`;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString();
    const out = body.startsWith("OPEN") ? openBody : "";
    res.writeHead(200, {
      "Content-Type": "application/websocket-events",
      "Sec-WebSocket-Extensions": "grip",
      "Content-Length": Buffer.byteLength(out),
    });
    res.end(out);
  });
});
server.keepAliveTimeout = 600000;
server.listen(port, "127.0.0.1", 8192, () => console.log(`grip backend on 127.0.0.1:${port}`));
