// Runs a command that knows nothing of tlx (the MLflow server) so that it dies with tlx,
// however tlx dies: this process leads the command's process group and holds the read end
// of a pipe whose write end only tlx holds. When tlx exits, even by SIGKILL, the kernel
// closes the pipe; this process then stops the whole group (SIGTERM, SIGKILL 3 s later).
// Plain JavaScript: it runs the same from the sources and from the bundle.
import { spawn } from 'node:child_process';

const [file, ...args] = process.argv.slice(2);
const graceMs = 3000;
let orphaned = false;

function signalGroup(signal) {
  try {
    process.kill(-process.pid, signal);
  } catch {
    // the group is already gone
  }
}

// tlx stops the command by signalling the whole group; this watcher leaves when the command has.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => {});

const child = spawn(file, args, { stdio: ['ignore', 'inherit', 'inherit'] });
child.on('error', (error) => {
  process.stderr.write(`${file}: ${error.message}\n`);
  process.exit(127);
});
child.on('exit', (code, signal) => {
  if (!orphaned) process.exit(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15));
});

process.stdin.on('end', () => {
  orphaned = true;
  signalGroup('SIGTERM');
  setTimeout(() => signalGroup('SIGKILL'), graceMs);
});
process.stdin.on('error', () => process.stdin.emit('end'));
process.stdin.resume();
