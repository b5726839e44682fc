// embed: two tidemap replicas in one process, kept in sync by the sync protocol.
//
// The embedding API end to end, the way an application uses it:
//   1. open a replica: a data dir holding an identity key and a LevelDB database;
//   2. subscribe to its changes;
//   3. write;
//   4. sync with a peer. The sync core (replica/sync.h) does no I/O: a SyncSession takes
//      decoded messages and returns messages to send. Here the "network" is two in-memory
//      queues of encoded frames (schemas/codec.h). A real application carries the same
//      frames over its own connection, or runs `tidemap serve`.
//
// Usage: embed [DIR]. Without DIR it works in a fresh temporary directory and removes it
// at exit; with DIR it keeps DIR/a and DIR/b, which `tidemap scan --data DIR/a users`
// can then inspect. It exits 0 only when both replicas end with equal Merkle roots and
// equal values for every key, and 1 otherwise.
//
// Build it against an installed tidemap: see CMakeLists.txt next to this file.

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tidemap/base/clock.h>
#include <tidemap/base/status.h>
#include <tidemap/hlc/hlc.h>
#include <tidemap/replica/replica.h>
#include <tidemap/replica/sync.h>
#include <tidemap/schemas/codec.h>
#include <tidemap/schemas/messages.h>
#include <tidemap/storage/identity.h>

namespace {

using tidemap::Replica;
using tidemap::Result;
using tidemap::Status;
using tidemap::msg::Message;

// Opens the data dir `dir` (creating it on first use) with the layout `tidemap init`
// makes: DIR/identity.key and DIR/db. `clock` must outlive the replica.
Result<std::unique_ptr<Replica>> OpenReplica(const std::string& dir, tidemap::Clock* clock) {
  // The node id comes from the node's Ed25519 public key: created once, loaded after.
  auto identity = tidemap::Identity::Load(dir);
  if (!identity.ok() && identity.status().IsNotFound()) {
    identity = tidemap::Identity::Create(dir);
  }
  if (!identity.ok()) return identity.status();

  tidemap::ReplicaOptions options;
  options.path = dir + "/db";
  options.clock = clock;
  options.node_id = identity->node_id();
  options.durability = tidemap::Durability::kRelaxed;  // the default, kSync, fsyncs each commit
  return Replica::Open(std::move(options));
}

// One direction of the in-process connection: encoded frames in flight, oldest first.
struct Wire {
  std::deque<std::string> frames;
  uint64_t messages = 0;
  uint64_t bytes = 0;
};

// Encodes each message of `out` into the frame payload a transport would carry.
Status Send(std::vector<Message>* out, Wire* wire) {
  for (const Message& m : *out) {
    TIDEMAP_ASSIGN_OR_RETURN(std::string frame, tidemap::EncodeMessage(m));
    wire->messages += 1;
    wire->bytes += frame.size();
    wire->frames.push_back(std::move(frame));
  }
  out->clear();
  return Status::Ok();
}

// Decodes every frame waiting on `wire` and hands it to `session`, whose replies are
// appended to `out`. A non-OK status means the session must be closed.
Status Deliver(Wire* wire, tidemap::SyncSession* session, uint64_t now_ms,
               std::vector<Message>* out) {
  while (!wire->frames.empty()) {
    // DecodeMessage never trusts its input: limits and malformed bytes come back as a Status.
    TIDEMAP_ASSIGN_OR_RETURN(Message m, tidemap::DecodeMessage(wire->frames.front()));
    wire->frames.pop_front();
    TIDEMAP_RETURN_IF_ERROR(session->Receive(m, now_ms, out));
  }
  return Status::Ok();
}

// Syncs `a` and `b` over one in-process connection: a session on each side, every
// message encoded and decoded on the way. Returns once both sessions are idle and
// nothing is in flight; Unavailable if that takes more than kRoundsMax rounds.
Status Sync(Replica* a, Replica* b, tidemap::Clock* clock) {
  constexpr int kRoundsMax = 100;  // two small replicas settle in a handful
  // Each side is told the peer's node id; over a network it comes from the handshake.
  tidemap::SyncSession at_a(a, b->node_id(), tidemap::SyncOptions{});
  tidemap::SyncSession at_b(b, a->node_id(), tidemap::SyncOptions{});
  Wire a_to_b;
  Wire b_to_a;
  std::vector<Message> out;

  TIDEMAP_RETURN_IF_ERROR(at_a.Start(clock->NowMillis(), &out));  // each side's Hello
  TIDEMAP_RETURN_IF_ERROR(Send(&out, &a_to_b));
  TIDEMAP_RETURN_IF_ERROR(at_b.Start(clock->NowMillis(), &out));
  TIDEMAP_RETURN_IF_ERROR(Send(&out, &b_to_a));

  for (int round = 1; round <= kRoundsMax; ++round) {
    const uint64_t now_ms = clock->NowMillis();
    // B takes what A sent, then adds anything due (new oplog rows, diff steps).
    TIDEMAP_RETURN_IF_ERROR(Deliver(&a_to_b, &at_b, now_ms, &out));
    TIDEMAP_RETURN_IF_ERROR(at_b.Poll(now_ms, &out));
    TIDEMAP_RETURN_IF_ERROR(Send(&out, &b_to_a));
    // And the same the other way.
    TIDEMAP_RETURN_IF_ERROR(Deliver(&b_to_a, &at_a, now_ms, &out));
    TIDEMAP_RETURN_IF_ERROR(at_a.Poll(now_ms, &out));
    TIDEMAP_RETURN_IF_ERROR(Send(&out, &a_to_b));

    if (a_to_b.frames.empty() && b_to_a.frames.empty() && at_a.Idle() && at_b.Idle()) {
      std::printf("synced in %d rounds: a sent %" PRIu64 " messages (%" PRIu64
                  " bytes), b sent %" PRIu64 " (%" PRIu64 " bytes)\n",
                  round, a_to_b.messages, a_to_b.bytes, b_to_a.messages, b_to_a.bytes);
      return Status::Ok();
    }
  }
  return Status::Unavailable("sync did not settle within " + std::to_string(kRoundsMax) +
                             " rounds");
}

// "users/alice" for messages.
std::string Name(std::string_view map, std::string_view key) {
  return std::string(map) + "/" + std::string(key);
}

// The live value of (map, key) as text: its bytes, or "(absent)" when NotFound.
Result<std::string> ValueText(const Replica& replica, const std::string& map,
                              const std::string& key) {
  auto record = replica.Get(map, key);
  if (record.ok()) return record->value;
  if (record.status().IsNotFound()) return std::string("(absent)");
  return record.status();
}

// Prints every key of both replicas and checks that they hold the same values and the
// same Merkle root. Returns Corruption naming the first difference.
Status CompareReplicas(const Replica& a, const Replica& b) {
  std::set<std::pair<std::string, std::string>> keys;  // (map, key), tombstones included
  for (const Replica* r : {&a, &b}) {
    TIDEMAP_RETURN_IF_ERROR(r->ForEachKeyMeta([&](const tidemap::KeyMeta& meta) {
      keys.emplace(std::string(meta.map), std::string(meta.key));
      return true;
    }));
  }
  Status first_difference;
  for (const auto& [map, key] : keys) {
    TIDEMAP_ASSIGN_OR_RETURN(std::string value_a, ValueText(a, map, key));
    TIDEMAP_ASSIGN_OR_RETURN(std::string value_b, ValueText(b, map, key));
    const bool same = value_a == value_b;
    std::printf("  %-14s a: %-22s b: %s%s\n", Name(map, key).c_str(), value_a.c_str(),
                value_b.c_str(), same ? "" : "   <- differs");
    if (!same && first_difference.ok()) {
      first_difference = Status::Corruption(Name(map, key) + " differs");
    }
  }
  const std::string root_a = a.MerkleRoot().ToHex();
  const std::string root_b = b.MerkleRoot().ToHex();
  std::printf("merkle root a %s\nmerkle root b %s\n", root_a.c_str(), root_b.c_str());
  TIDEMAP_RETURN_IF_ERROR(first_difference);
  if (root_a != root_b) return Status::Corruption("the Merkle roots differ");
  return Status::Ok();
}

Status Run(const std::string& dir) {
  tidemap::SystemClock clock;  // declared first: it must outlive both replicas
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<Replica> a, OpenReplica(dir + "/a", &clock));
  TIDEMAP_ASSIGN_OR_RETURN(std::unique_ptr<Replica> b, OpenReplica(dir + "/b", &clock));
  std::printf("node a %s\nnode b %s\n", tidemap::NodeIdToString(a->node_id()).c_str(),
              tidemap::NodeIdToString(b->node_id()).c_str());

  // Every committed change to any map ("" = all maps) of b, local or from a peer. The
  // callback runs on the committing thread, after the commit; the event's string views
  // are valid only during the call. It may read from the replica but not write to it.
  const Replica::SubscriptionId subscription = b->Subscribe("", [](const tidemap::ChangeEvent& e) {
    std::printf("  b: %-6s %-14s %-22s %s %s\n",
                std::string(tidemap::ChangeKindName(e.kind)).c_str(), Name(e.map, e.key).c_str(),
                std::string(e.value).c_str(), e.remote ? "from a peer" : "local",
                e.version.ToString().c_str());
  });

  std::printf("writes:\n");
  TIDEMAP_RETURN_IF_ERROR(a->Put("users", "alice", R"({"name":"Alice"})").status());
  TIDEMAP_RETURN_IF_ERROR(a->Put("users", "bob", R"({"name":"Bob"})").status());
  TIDEMAP_RETURN_IF_ERROR(b->Put("users", "carol", R"({"name":"Carol"})").status());
  // Both write the same key: on both replicas the greater (hlc, origin) version wins.
  // Within one millisecond the HLCs' logical counters decide, so the write made later in
  // real time may lose: concurrent writes are ordered by version, not by wall time.
  TIDEMAP_RETURN_IF_ERROR(a->Put("config", "color", "blue").status());
  TIDEMAP_RETURN_IF_ERROR(b->Put("config", "color", "green").status());
  // A delete is a tombstone version; it replicates like any other write.
  TIDEMAP_RETURN_IF_ERROR(a->Delete("users", "bob").status());

  std::printf("sync (b's subscriber prints what arrives):\n");
  Status synced = Sync(a.get(), b.get(), &clock);
  b->Unsubscribe(subscription);
  TIDEMAP_RETURN_IF_ERROR(synced);

  std::printf("after sync:\n");
  return CompareReplicas(*a, *b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2) {
    std::fprintf(stderr, "usage: embed [DIR]\n");
    return 2;
  }
  std::string dir;
  if (argc == 2) {
    dir = argv[1];
  } else {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "tidemap-embed-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = pattern;
  }

  const Status status = Run(dir);
  if (argc == 1) {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "embed: %s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("converged\n");
  return 0;
}
