// Socket.IO v4 fan-out server for perf/fanout_peers.sh: every connection joins the room
// "bench"; POST /publish with {"items":["...", ...]} emits each item to the room as the
// event "msg". Usage: NODE_PATH=<dir with socket.io> node fanout_socketio.js PORT
const http = require("http");
const { Server } = require("socket.io");
const port = Number(process.argv[2] || 5020);
const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/publish") {
    res.writeHead(404, { "Content-Length": 0 });
    return res.end();
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let n = 0;
    try {
      for (const item of JSON.parse(Buffer.concat(chunks)).items) {
        io.to("bench").emit("msg", item);
        n++;
      }
    } catch (e) {
      res.writeHead(400, { "Content-Length": 0 });
      return res.end();
    }
    const body = JSON.stringify({ published: n });
    res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 600000;
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false });
io.on("connection", (socket) => socket.join("bench"));
server.listen(port, "127.0.0.1", 4096, () => console.log(`socket.io fan-out on 127.0.0.1:${port}`));
