//! ISO 3166-1 alpha-2 country codes, validated against the official list, and a compact set
//! of them for request filters.

use std::fmt;
use std::str::FromStr;

use rkyv::{Archive, Deserialize, Serialize};

use crate::error::InputError;

/// The 249 officially assigned ISO 3166-1 alpha-2 codes, sorted. A country's position here is
/// its index in a [`CountrySet`].
const ASSIGNED: &str = "\
ADAEAFAGAIALAMAOAQARASATAUAWAXAZ\
BABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ\
CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZ\
DEDJDKDMDODZ\
ECEEEGEHERESET\
FIFJFKFMFOFR\
GAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGY\
HKHMHNHRHTHU\
IDIEILIMINIOIQIRISIT\
JEJMJOJP\
KEKGKHKIKMKNKPKRKWKYKZ\
LALBLCLILKLRLSLTLULVLY\
MAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZ\
NANCNENFNGNINLNONPNRNUNZ\
OM\
PAPEPFPGPHPKPLPMPNPRPSPTPWPY\
QA\
RERORSRURW\
SASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZ\
TCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZ\
UAUGUMUSUYUZ\
VAVCVEVGVIVNVU\
WFWS\
YEYT\
ZAZMZW";

/// How many country codes are assigned.
pub const COUNTRY_COUNT: usize = ASSIGNED.len() / 2;

/// A validated ISO 3166-1 alpha-2 country code, stored as its index in the official list.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
#[rkyv(compare(PartialEq))]
pub struct Country(u8);

impl Country {
    /// Parses a two-letter code (case-insensitive) that ISO 3166-1 assigns.
    pub fn parse(code: &str) -> Result<Country, InputError> {
        let upper = code.to_ascii_uppercase();
        let unknown = || InputError::UnknownCountry(code.chars().take(8).collect());
        if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let bytes = ASSIGNED.as_bytes();
        let (mut low, mut high) = (0, COUNTRY_COUNT);
        while low < high {
            let mid = (low + high) / 2;
            match bytes[2 * mid..2 * mid + 2].cmp(upper.as_bytes()) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return Ok(Country(mid as u8)),
            }
        }
        Err(unknown())
    }

    /// The country at `index` in the official list, if there is one.
    pub fn from_index(index: usize) -> Option<Country> {
        (index < COUNTRY_COUNT).then_some(Country(index as u8))
    }

    /// Position in the official list (0-based).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// Whether the index is in the official list: always for a parsed country; a command
    /// decoded from a damaged journal (checksum right, contents wrong) may hold any byte.
    pub fn is_assigned(self) -> bool {
        self.index() < COUNTRY_COUNT
    }

    /// The two-letter code (`??` for an index outside the list, which only a damaged record
    /// can hold).
    pub fn code(self) -> &'static str {
        let i = self.index();
        ASSIGNED.get(2 * i..2 * i + 2).unwrap_or("??")
    }

    /// Every assigned country, in code order.
    pub fn all() -> impl Iterator<Item = Country> {
        (0..COUNTRY_COUNT).map(|i| Country(i as u8))
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Country {
    type Err = InputError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Country::parse(code)
    }
}

/// A set of countries as a 256-bit map. The empty set, in a request, means "any country".
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug))]
pub struct CountrySet([u64; 4]);

impl CountrySet {
    /// The empty set ("any country" in a request).
    pub const ANY: CountrySet = CountrySet([0; 4]);

    /// The set holding exactly these countries.
    pub fn of(countries: &[Country]) -> CountrySet {
        let mut set = CountrySet::ANY;
        for country in countries {
            set.insert(*country);
        }
        set
    }

    /// Adds `country` to the set.
    pub fn insert(&mut self, country: Country) {
        let i = country.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Whether `country` is in the set.
    pub fn contains(&self, country: Country) -> bool {
        let i = country.index();
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether a request filtering on this set accepts `country` (empty accepts all).
    pub fn accepts(&self, country: Country) -> bool {
        self.is_empty() || self.contains(country)
    }

    /// Whether every member is an assigned country (see [`Country::is_assigned`]).
    pub fn is_assigned(&self) -> bool {
        (COUNTRY_COUNT..256).all(|i| self.0[i / 64] & (1 << (i % 64)) == 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// How many countries are in the set.
    pub fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }

    /// The assigned countries in the set, in code order: bit by bit, not country by country
    /// (the matcher takes a one-country set's only member on every request).
    pub fn iter(&self) -> impl Iterator<Item = Country> + '_ {
        self.0.iter().enumerate().flat_map(|(word_index, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                let bit = bits.trailing_zeros() as usize;
                let index = word_index * 64 + bit;
                (bits != 0 && index < COUNTRY_COUNT).then(|| {
                    bits &= bits - 1;
                    Country(index as u8)
                })
            })
        })
    }
}

impl fmt::Debug for CountrySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("any");
        }
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_lists_its_assigned_members_in_code_order() {
        let members = [0u8, 1, 63, 64, 127, 128, 200, 248, 253];
        let mut set = CountrySet::ANY;
        for member in members {
            set.insert(Country(member));
        }
        let listed: Vec<u8> = set.iter().map(|country| country.0).collect();
        let expected: Vec<u8> = Country::all()
            .filter(|country| set.contains(*country))
            .map(|country| country.0)
            .collect();
        assert_eq!(listed, expected);
        assert_eq!(listed, [0, 1, 63, 64, 127, 128, 200, 248]);
        assert_eq!(CountrySet::ANY.iter().count(), 0);
    }

    #[test]
    fn the_official_list_has_249_sorted_codes() {
        assert_eq!(COUNTRY_COUNT, 249);
        // A byte a damaged journal record may hold: refused by validation, printable.
        let damaged = Country(253);
        assert!(!damaged.is_assigned());
        assert_eq!(damaged.code(), "??");
        let mut set = CountrySet::ANY;
        set.insert(damaged);
        assert!(!set.is_assigned());
        assert!(CountrySet::of(&[Country(0), Country(248)]).is_assigned());
        let codes: Vec<&str> = Country::all().map(Country::code).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted);
    }

    #[test]
    fn parses_assigned_codes_and_refuses_others() {
        for code in ["FR", "us", "De", "ZW", "AD", "SS", "XK"] {
            let parsed = Country::parse(code);
            if code == "XK" {
                // Kosovo uses a user-assigned code, not an ISO 3166-1 assignment.
                assert!(parsed.is_err());
            } else {
                assert_eq!(
                    parsed.map(Country::code),
                    Ok(code.to_ascii_uppercase().as_str())
                );
            }
        }
        for bad in ["", "F", "FRA", "ZZ", "1A", "é", "UK"] {
            assert!(
                matches!(Country::parse(bad), Err(InputError::UnknownCountry(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn sets_hold_what_was_inserted() {
        let fr = Country::parse("FR").expect("FR");
        let zw = Country::parse("ZW").expect("ZW");
        let set = CountrySet::of(&[fr, zw]);
        assert_eq!(set.len(), 2);
        assert!(set.contains(zw) && set.contains(fr));
        assert!(!set.contains(Country::parse("DE").expect("DE")));
        assert!(CountrySet::ANY.accepts(fr));
    }
}
