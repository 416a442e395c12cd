// A Yjs client (y-websocket's WebsocketProvider over the `ws` package), driven by the interop
// tests through JSON lines: commands on stdin, and after every change a snapshot of what it
// sees on stdout ({"text", "synced", "status", "clientID", "awareness"}).
//
// usage: node yjs_client.mjs SERVER_URL ROOM [PARAMS_JSON]
// PARAMS_JSON: the URL's query parameters (y-websocket's `params`), e.g. {"token": "..."}.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const [serverUrl, room, params] = process.argv.slice(2)
const doc = new Y.Doc()
const text = doc.getText('text')
const provider = new WebsocketProvider(serverUrl, room, doc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
  maxBackoffTime: 300,
  params: params ? JSON.parse(params) : {}
})
let status = 'connecting'

const snapshot = () => {
  const awareness = {}
  for (const [id, state] of provider.awareness.getStates()) awareness[id] = state
  process.stdout.write(JSON.stringify({
    text: text.toString(),
    synced: provider.synced,
    status,
    clientID: doc.clientID,
    awareness
  }) + '\n')
}

provider.on('sync', snapshot)
provider.on('status', event => { status = event.status; snapshot() })
doc.on('update', snapshot)
provider.awareness.on('change', snapshot)

const commands = {
  insert: ({ index, value }) => text.insert(index ?? text.length, value),
  awareness: ({ state }) => provider.awareness.setLocalState(state),
  disconnect: () => provider.disconnect(),
  connect: () => provider.connect(),
  snapshot: () => {},
  exit: () => { provider.destroy(); process.exit(0) }
}

readline.createInterface({ input: process.stdin }).on('line', line => {
  const command = JSON.parse(line)
  commands[command.op](command)
  snapshot()
})
// The test closing our stdin means it is done with us.
process.stdin.on('end', () => { provider.destroy(); process.exit(0) })
snapshot()
