/** Who has a document open (docs/protocol.md section 5, doc_viewers). */
export interface DocRef {
  readonly site: string;
  readonly doctype: string;
  readonly docname: string;
}

export interface PresenceStore {
  /** Records the socket as a viewer; resolves the de-duplicated users in order of first opening. */
  open(ref: DocRef, socketId: string, user: string): Promise<string[]>;
  /** Removes the socket; resolves the remaining users. */
  close(ref: DocRef, socketId: string): Promise<string[]>;
  stop(): Promise<void>;
}

/** Users in order of first opening, each once. */
export function orderedUsers(entries: Iterable<{ seq: number; user: string }>): string[] {
  const sorted = [...entries].sort((a, b) => a.seq - b.seq);
  const seen = new Set<string>();
  const out: string[] = [];
  for (const e of sorted) {
    if (!seen.has(e.user)) {
      seen.add(e.user);
      out.push(e.user);
    }
  }
  return out;
}

/** One process: presence is the process's own view (standalone mode). */
export class LocalPresence implements PresenceStore {
  private readonly docs = new Map<string, Map<string, { seq: number; user: string }>>();
  private seq = 0;

  private key(ref: DocRef): string {
    return `${ref.site}\0${ref.doctype}\0${ref.docname}`;
  }

  open(ref: DocRef, socketId: string, user: string): Promise<string[]> {
    const k = this.key(ref);
    let doc = this.docs.get(k);
    if (!doc) {
      doc = new Map();
      this.docs.set(k, doc);
    }
    if (!doc.has(socketId)) doc.set(socketId, { seq: ++this.seq, user });
    return Promise.resolve(orderedUsers(doc.values()));
  }

  close(ref: DocRef, socketId: string): Promise<string[]> {
    const k = this.key(ref);
    const doc = this.docs.get(k);
    if (!doc) return Promise.resolve([]);
    doc.delete(socketId);
    if (doc.size === 0) this.docs.delete(k);
    return Promise.resolve(orderedUsers(doc.values()));
  }

  get size(): number {
    return this.docs.size;
  }

  stop(): Promise<void> {
    this.docs.clear();
    return Promise.resolve();
  }
}
