//! Wallets the engine has met, interned: each gets a small dense id on first sight, and its
//! profile and deal list live in a vector under that id.
//!
//! A lease touches both parties' profiles and deal lists when it is made and again when it
//! ends. Keyed by 20-byte address in hash maps, that was four probes (and four key compares
//! on cold lines) per deal made and two per deal ended. An offer, an open deal and a finished
//! deal waiting to leave the book carry their parties' ids instead, so those touches are plain
//! indexes; only a request's requester is looked up, once per request.
//!
//! Ids are handed out in order of first sight, so they follow from the command stream (the
//! engine stays deterministic), but they are an index only: nothing hashed or stored names a
//! party by id, and a restored engine numbers its parties afresh.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::deal::{Deal, Profile};
use crate::slab::IdSlab;
use crate::types::{Address, DealId};

/// A wallet's index in [`Parties`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartyId(u32);

impl PartyId {
    /// Its position, for vectors indexed by party.
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the engine keeps of one wallet.
///
/// Laid out so that what every deal made touches shares one cache line: the deal list's
/// handle first, then the profile, which opens with its deal counters (`Profile` is
/// `repr(C)` for that). A lease misses on each party's record; unaligned and reordered by
/// the compiler, those were two lines each (single-IP leases +3 %, eager +4 %).
#[derive(Clone, Debug, Default)]
#[repr(C, align(64))]
pub(crate) struct Party {
    /// Its deals in the book (either side), oldest first.
    pub(crate) deals: PartyDeals,
    pub(crate) profile: Profile,
}

/// Every wallet met, by address and by id. Wallets are never forgotten (nor were their
/// profiles before): one entry per wallet that ever offered, leased or was noted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parties {
    ids: FxHashMap<Address, PartyId>,
    addresses: Vec<Address>,
    parties: Vec<Party>,
}

impl Parties {
    /// The id of `address`, interning it on first sight.
    pub(crate) fn intern(&mut self, address: Address) -> PartyId {
        *self.ids.entry(address).or_insert_with(|| {
            let id = PartyId(u32::try_from(self.parties.len()).expect("fewer than 2^32 wallets"));
            self.addresses.push(address);
            self.parties.push(Party::default());
            id
        })
    }

    /// Asks for the record of `id` (see [`crate::prefetch`]); reads nothing.
    pub(crate) fn prefetch(&self, id: PartyId) {
        if let Some(party) = self.parties.get(id.index()) {
            crate::prefetch::prefetch(party);
        }
    }

    /// Asks for the end of `id`'s deal list, where its next deal goes. This reads the party's
    /// record to find it: ask for the record first ([`Parties::prefetch`]), some work earlier.
    pub(crate) fn prefetch_deal_list_end(&self, id: PartyId) {
        if let Some(party) = self.parties.get(id.index()) {
            let (front, back) = party.deals.ids.as_slices();
            if let Some(last) = back.last().or(front.last()) {
                crate::prefetch::prefetch(last);
            }
        }
    }

    /// The id of `address`, if it was ever met.
    pub(crate) fn id(&self, address: &Address) -> Option<PartyId> {
        self.ids.get(address).copied()
    }

    /// The wallet of `address`, if it was ever met.
    pub(crate) fn get(&self, address: &Address) -> Option<&Party> {
        self.id(address).map(|id| &self.parties[id.index()])
    }

    pub(crate) fn party(&self, id: PartyId) -> &Party {
        &self.parties[id.index()]
    }

    pub(crate) fn party_mut(&mut self, id: PartyId) -> &mut Party {
        &mut self.parties[id.index()]
    }

    /// The profile of `id`, to change.
    pub(crate) fn profile_mut(&mut self, id: PartyId) -> &mut Profile {
        &mut self.party_mut(id).profile
    }

    /// Every wallet whose profile says something (one that only offered has none), in no
    /// particular order.
    pub(crate) fn profiles(&self) -> impl Iterator<Item = (Address, &Profile)> {
        self.addresses
            .iter()
            .zip(&self.parties)
            .filter(|(_, party)| party.profile != Profile::default())
            .map(|(address, party)| (*address, &party.profile))
    }
}

/// Room an emptied deal list keeps (a wallet that leases again soon reuses it).
const EMPTY_CAPACITY: usize = 64;

/// The deals of one wallet in the book, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartyDeals {
    pub(crate) ids: VecDeque<DealId>,
    /// Ids in `ids` whose deal left the book but not yet the list.
    gone: usize,
}

impl PartyDeals {
    /// `id` left the book (`deals`): drop it, and any other gone id, from the list — at once
    /// from the front, by a sweep once half the list is gone (a long lease at the front must
    /// not keep the ids of every deal after it). An emptied list gives its memory back: a
    /// wallet that once held a million leases keeps nothing once they are gone.
    pub(crate) fn forget(&mut self, id: DealId, deals: &IdSlab<Deal>) {
        self.gone += 1;
        if self.ids.front() == Some(&id) {
            self.ids.pop_front();
            self.gone -= 1;
            // Only look behind when some id behind is known to be gone: the next deal of a
            // busy wallet is a cold record in the deal book.
            while self.gone > 0
                && let Some(front) = self.ids.front()
                && !deals.contains(front.0)
            {
                self.ids.pop_front();
                self.gone = self.gone.saturating_sub(1);
            }
        }
        if self.gone > 16 && self.gone * 2 > self.ids.len() {
            self.ids.retain(|id| deals.contains(id.0));
            self.gone = 0;
        }
        if self.ids.is_empty() && self.ids.capacity() > EMPTY_CAPACITY {
            self.ids = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(byte: u8) -> Address {
        Address([byte; 20])
    }

    #[test]
    fn a_wallet_keeps_its_id_and_ids_follow_first_sight() {
        let mut parties = Parties::default();
        let b = parties.intern(wallet(2));
        let a = parties.intern(wallet(1));
        assert_eq!(parties.intern(wallet(2)), b);
        assert_eq!((b, a), (PartyId(0), PartyId(1)));
        assert_eq!(parties.id(&wallet(1)), Some(a));
        assert_eq!(parties.id(&wallet(3)), None);
    }

    #[test]
    fn only_profiles_that_say_something_are_listed() {
        let mut parties = Parties::default();
        let quiet = parties.intern(wallet(1));
        let busy = parties.intern(wallet(2));
        parties.profile_mut(busy).deals_as_provider += 1;
        let listed: Vec<Address> = parties.profiles().map(|(address, _)| address).collect();
        assert_eq!(listed, vec![wallet(2)]);
        assert_eq!(parties.party(quiet).profile, Profile::default());
    }

    #[test]
    fn what_a_new_deal_touches_shares_one_line() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Party>(), 64);
        assert!(offset_of!(Party, deals) + size_of::<PartyDeals>() <= 64);
        let counters_end =
            offset_of!(Party, profile) + offset_of!(Profile, deals_as_requester) + size_of::<u64>();
        assert!(counters_end <= 64, "counters end at {counters_end}");
    }
}
