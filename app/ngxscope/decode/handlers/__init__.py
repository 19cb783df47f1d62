"""One handler per protocol nginx speaks on a connection, behind one interface (base).

http1 (HTTP/1 requests and responses, with h1exchange building their exchanges), http2
(one exchange per stream), websocket (tunnels after a 101), tcpstream (stream-module TCP
proxy sessions) and upstream (nginx's connections to its backends). The dispatcher
(decode.assembler) owns the connections and gives each event to the handler of the
connection's protocol; handlers emit through decode.emitter and never call the dispatcher.
"""
