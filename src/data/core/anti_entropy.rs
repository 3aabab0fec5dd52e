//! The data core's side of anti-entropy: digests, versions and the entries they call
//! for (the pure pieces are in `data/sync.rs`).

use super::{Actions, DataAction, DataCore, Now};
use crate::data::{
    store::differing,
    sync::{due, entry_chunks, root_of, versions_chunks, Due, Sent},
    wire::{Frame, Id, Version},
};

impl DataCore {
    /// A peer's versions of the buckets that differ: it gets the entries we have newer
    /// or it lacks, within its subscribe rights.
    pub(super) fn on_versions(
        &mut self,
        from: Id,
        buckets: &[u8],
        versions: &[Version],
        out: &mut Actions,
    ) {
        let mut push = self.retained.to_push(buckets, versions);
        push.retain(|m| self.gate.may_send(&from, &m.topic));
        for chunk in entry_chunks(push) {
            out.push(DataAction::Send {
                to: vec![from],
                frame: Frame::Entries(chunk),
            });
        }
    }

    /// A peer's digest: it gets our versions in the buckets that differ.
    pub(super) fn on_digest(&mut self, from: Id, theirs: &[u64], out: &mut Actions) {
        let diff = differing(&self.retained.digest(), theirs);
        if diff.is_empty() {
            return;
        }
        let mut versions = self.retained.versions(&diff);
        // A peer never gets, nor hears of, entries outside its subscribe rights.
        versions.retain(|v| self.gate.may_send(&from, &v.topic));
        for (buckets, versions) in versions_chunks(&diff, versions) {
            out.push(DataAction::Send {
                to: vec![from],
                frame: Frame::Versions { buckets, versions },
            });
        }
    }

    pub(super) fn send_digest(&mut self, peer: Id, now: Now, out: &mut Actions) {
        let d = self.retained.digest();
        self.synced.insert(peer, Sent::new(root_of(&d), now.at));
        out.push(DataAction::Send {
            to: vec![peer],
            frame: Frame::Digest(d),
        });
    }

    /// Each linked peer gets our digest if it has not seen our current one, the root
    /// hash if it got nothing for a long time, else nothing.
    pub(super) fn sync_round(&mut self, now: Now, out: &mut Actions) {
        let d = self.retained.digest();
        let root = root_of(&d);
        for peer in &self.links {
            let frame = match due(self.synced.get(peer), root, now.at) {
                Due::Digest => Frame::Digest(d.clone()),
                Due::Root => Frame::Root(root),
                Due::Nothing => continue,
            };
            self.synced.insert(*peer, Sent::new(root, now.at));
            out.push(DataAction::Send {
                to: vec![*peer],
                frame,
            });
        }
    }
}
