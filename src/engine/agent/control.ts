// The seam between the agent and the checkpoint code (pause to disk, snapshots, fork): a live
// connection from inside the sandbox to a host socket cannot be saved by `runsc checkpoint`, so the
// agent hangs up first and comes back after the restore. LiveSandbox.agent exposes this; it is
// absent when the sandbox runs without an agent.

export interface AgentControl {
  /** Whether the agent is connected now (processes, files and watches then go through it). */
  readonly connected: boolean;
  /**
   * Before a checkpoint: stop accepting the agent, ask it to hang up and wait until its connection
   * is closed (at most `timeoutMs`). Its processes keep running; their streams wait for it.
   * Until listenAgain (or expectReconnect), the agent finds no socket and the exec path serves the sandbox.
   */
  quiesce(timeoutMs?: number): Promise<void>;
  /**
   * Accept the agent again without waiting for it: called before a restore, so that the restored
   * agent's first redial finds the socket (it redials every few ms after a quiesce).
   */
  listenAgain(): Promise<void>;
  /**
   * After the checkpoint was written (the sandbox runs on) or a restore: accept the agent again and
   * wait up to `timeoutMs` for it to reconnect and re-attach its processes. Resolves false if it
   * did not (the exec path serves the sandbox meanwhile).
   */
  expectReconnect(timeoutMs?: number): Promise<boolean>;
}
