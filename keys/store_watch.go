package keys

// This file holds how a Store keeps its copy of the bucket current:
// queue.FollowBucket hands it every entry. Deleted keys come as delete
// markers, which the bucket keeps (it never purges), so a new watch's
// current values include them.

import (
	"encoding/json"

	"github.com/nats-io/nats.go/jetstream"
)

// apply records one watched entry (queue.FollowBucket's callback).
func (s *Store) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		s.store(e.Key(), entry{rev: e.Revision()})
		return
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil || k.Token != e.Key() {
		s.log.Warn("keys: ignoring a malformed entry", "token_prefix", e.Key()[:min(12, len(e.Key()))])
		return
	}
	s.store(e.Key(), entry{key: &k, rev: e.Revision()})
}
