// dspex's sandbox runner: Deno + Pyodide, offline, speaking line-delimited JSON on stdin/stdout.
//
// It imports only the pinned npm package (cached in DENO_DIR, run with --cached-only) and Deno's
// built-ins. The Python side (`_guest.py`) arrives in the first message; the host enforces the
// limits (wall time, memory, output line size) and the Deno flags set the permissions. Nothing
// here is trusted to contain the model's code: this file only keeps the protocol honest.
//
// Host -> runner: {"id", "method", "params"}; runner -> host: {"id", "result"} or {"id", "error"},
// and, while code runs, {"id", "method": "tool_call", "params": {"name", "kwargs"}} which the host
// answers with {"id", "result": {"value"}} or {"id", "error": {"type", "message"}}.

import { loadPyodide } from "npm:pyodide@0.29.4";

const JSONText = Object.freeze({ parse: JSON.parse, stringify: JSON.stringify });
const stdout = Deno.stdout;
const stderr = Deno.stderr;
const encoder = new TextEncoder();
const pyodideDir = Deno.args[0];

function writeAll(stream, bytes) {
  let written = 0;
  while (written < bytes.length) written += stream.writeSync(bytes.subarray(written));
}

// Only this function writes to stdout; a message the model's code forges through js.Deno.stdout
// lacks the host's random request id and is skipped by the host.
function send(message) {
  writeAll(stdout, encoder.encode(JSONText.stringify(message) + "\n"));
}

function sendResult(id, result) {
  if (!(result instanceof RawJSON)) return send({ id, result });
  writeAll(stdout, encoder.encode(`{"id":${JSONText.stringify(id)},"result":${result.text}}\n`));
}

function diagnose(text) {
  writeAll(stderr, encoder.encode(String(text).slice(0, 4096) + "\n"));
}

// The model's code can reach `console` through `js`: send it to stderr, away from the protocol.
for (const name of ["log", "info", "warn", "error", "debug", "trace"]) {
  globalThis.console[name] = (...args) => diagnose(args.map(String).join(" "));
}

async function* lines(readable) {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of readable) {
    buffered += decoder.decode(chunk, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
    }
  }
}

const input = lines(Deno.stdin.readable);

async function nextMessage() {
  const { value, done } = await input.next();
  return done ? null : JSONText.parse(value);
}

globalThis.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  diagnose(`unhandled rejection: ${event.reason?.message ?? event.reason}`);
});

const pyodide = await loadPyodide({ stdout: diagnose, stderr: diagnose });
// Pyodide is loaded: its files are no longer needed, so the model's code cannot read the cache.
if (pyodideDir) await Deno.permissions.revoke({ name: "read", path: pyodideDir });

const guest = pyodide.toPy({});
let guestRun = null;

class RawJSON {
  constructor(text) {
    this.text = text;
  }
}
let toolCalls = 0;

// Called (through run_sync) by the tool wrappers inside Python while `execute` is running.
async function toolCall(name, kwargsJson) {
  const id = `${currentRequest}:tool:${++toolCalls}`;
  send({ id, method: "tool_call", params: { name, kwargs: JSONText.parse(kwargsJson) } });
  const reply = await nextMessage();
  if (reply === null) throw new Error("the host closed the sandbox during a tool call");
  if (reply.id !== id) throw new Error(`tool reply out of order: expected ${id}, got ${reply.id}`);
  return JSONText.stringify(reply.error ? { error: reply.error } : { value: reply.result.value });
}

let currentRequest = "";

function fsEnsureParent(path) {
  let current = "";
  for (const part of path.split("/").slice(1, -1)) {
    current += "/" + part;
    try {
      pyodide.FS.stat(current);
    } catch {
      pyodide.FS.mkdir(current);
    }
  }
}

const handlers = {
  init(params) {
    pyodide.runPython(params.guest, { globals: guest, filename: "<dspex-guest>" });
    guest.get("init")(JSONText.stringify(params.config), toolCall);
    guestRun = guest.get("run");
    return { ready: true, pyodide: pyodide.version };
  },
  async mount(params) {
    const contents = await Deno.readFile(params.host_path);
    fsEnsureParent(params.virtual_path);
    pyodide.FS.writeFile(params.virtual_path, contents);
    return { mounted: params.virtual_path };
  },
  async sync(params) {
    await Deno.writeFile(params.host_path, pyodide.FS.readFile(params.virtual_path));
    return { synced: params.host_path };
  },
  register(params) {
    return JSONText.parse(guest.get("register")(JSONText.stringify(params)));
  },
  reset() {
    guest.get("reset")();
    return { reset: true };
  },
  async execute(params) {
    // The guest's reply is JSON text already (NaN included): passed on unparsed, see below.
    return new RawJSON(await guestRun(params.code, params.variables ?? "{}"));
  },
};

while (true) {
  const message = await nextMessage();
  if (message === null || message.method === "shutdown") break;
  currentRequest = String(message.id);
  const handler = handlers[message.method];
  try {
    if (!handler) throw new Error(`unknown method ${message.method}`);
    sendResult(message.id, await handler(message.params ?? {}));
  } catch (error) {
    send({ id: message.id, error: { type: error?.type ?? error?.name ?? "Error", message: String(error?.message ?? error) } });
  }
}
Deno.exit(0);
