/**
 * Every Redis key and channel the gateway owns, derived from one prefix so
 * several clusters (or tests) can share a Redis. Keys that Lua scripts touch
 * together share the `{prefix}` hash tag so they land in one Cluster slot.
 */
export interface Keys {
  readonly prefix: string;
  /** Leader lease: value `<nodeId>:<epoch>`. */
  readonly leaderLease: string;
  /** Monotonic fencing epoch, INCR on every acquisition. */
  readonly leaderEpoch: string;
  /** Leader progress: digests of the last broadcast events (for replay on takeover). */
  readonly leaderProgress: string;
  /** Pub/sub: a leader announces a voluntary release so standbys take over at once. */
  readonly leaderChannel: string;
  /**
   * Events without a room, delivered by every worker to every local site
   * namespace. Subscribed on the adapter's subscriber connection (a shard
   * channel in sharded mode), so they keep their order with room broadcasts.
   */
  readonly allSitesChannel: string;
  /** Stream of every event the leader broadcast (missed-event replay); same slot as the lease. */
  readonly history: string;
  /** Id below which the current history stream has nothing (set when the stream is created): older offsets are from a lost stream. */
  readonly historyGenesis: string;
  /** Socket.IO adapter channel prefix. */
  readonly adapterPrefix: string;
  /**
   * An idempotency key a publisher gave an event of site `namespace` ('' for
   * a room-less event), kept for GATEWAY_IDEMPOTENCY_WINDOW_MS; same slot as
   * the lease (the broadcast script records it). A namespace has no '/'.
   */
  idempotency(namespace: string, key: string): string;
  /** Hash: nodeId -> JSON node descriptor; entries expire by their `seen` field. */
  readonly nodes: string;
  /** Presence of one open document: hash socketId -> JSON entry. */
  presenceDoc(site: string, doctype: string, docname: string): string;
  /** Per-worker index of the presence keys it wrote (to clean up after a crash). */
  presenceIndex(workerId: string): string;
  /** Liveness of a worker (key with TTL). */
  workerAlive(workerId: string): string;
  /** Cached get_user_info answers. */
  authCache(digest: string): string;
  /** Lock of one get_user_info/permission question: the process holding it asks the backend, the others wait for its answer. */
  authLock(digest: string): string;
  /** A client's recoverable session (rooms, user, open documents), by its private session id. */
  session(pid: string): string;
  /** Counter: connections of one user of one site, cluster-wide (GATEWAY_MAX_CONNECTIONS_PER_USER). */
  userConnections(site: string, user: string): string;
  /** Counter: Engine.IO connections from one client address, cluster-wide (GATEWAY_MAX_CONNECTIONS_PER_IP). */
  ipConnections(ip: string): string;
}

export function createKeys(prefix: string): Keys {
  const p = `${prefix}:`;
  const tagged = `{${prefix}}`;
  return {
    prefix,
    leaderLease: `${tagged}:leader`,
    leaderEpoch: `${tagged}:leader:epoch`,
    leaderProgress: `${tagged}:leader:progress`,
    leaderChannel: `${p}leader`,
    history: `${tagged}:history`,
    historyGenesis: `${tagged}:history:genesis`,
    allSitesChannel: `${p}all-sites`,
    adapterPrefix: `${p}sio`,
    idempotency: (namespace, key) => `${tagged}:idem:${namespace}/${key}`,
    nodes: `${p}nodes`,
    presenceDoc: (site, doctype, docname) => `${p}presence:${site}:${doctype}/${docname}`,
    presenceIndex: (workerId) => `${p}presence-index:${workerId}`,
    workerAlive: (workerId) => `${p}alive:${workerId}`,
    // One hash slot per question: the answer is written before the lock is released, on one connection.
    authCache: (digest) => `${p}auth:{${digest}}`,
    authLock: (digest) => `${p}auth:{${digest}}:lock`,
    session: (pid) => `${p}session:${pid}`,
    userConnections: (site, user) => `${p}conns:${site}:${user}`,
    ipConnections: (ip) => `${p}conns-ip:${ip}`,
  };
}
