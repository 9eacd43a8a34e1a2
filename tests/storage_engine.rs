//! KV engine against a model: a BTreeMap keyed by (family, key).

use proptest::prelude::*;
use quorumkv::protocol::command::ColumnFamily;
use quorumkv::storage::engine::INLINE_BYTES;
use quorumkv::storage::{KvEngine, SharedBytes, Stored, ValueKind, WriteBatch};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

#[derive(Clone, Debug)]
enum Op {
    Put(ColumnFamily, Vec<u8>, Vec<u8>),
    Delete(ColumnFamily, Vec<u8>),
}

fn cf() -> impl Strategy<Value = ColumnFamily> {
    prop::sample::select(ColumnFamily::ALL.to_vec())
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet so puts, deletes and scans hit the same keys; some behind a common
    // prefix that puts them either side of the length up to which keys are held inline.
    (any::<bool>(), prop::collection::vec(0u8..4, 0..4)).prop_map(|(long, k)| {
        if long {
            [vec![1; INLINE_BYTES - 1], k].concat()
        } else {
            k
        }
    })
}

fn bytes_around_inline_limit() -> impl Strategy<Value = Vec<u8>> {
    (0..INLINE_BYTES + 3).prop_flat_map(|len| prop::collection::vec(0u8..3, len))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (cf(), key(), prop::collection::vec(any::<u8>(), 0..INLINE_BYTES + 8))
            .prop_map(|(c, k, v)| Op::Put(c, k, v)),
        1 => (cf(), key()).prop_map(|(c, k)| Op::Delete(c, k)),
    ]
}

proptest! {
    // proptest seeds from PROPTEST_RNG_SEED / its persistence file; a failure prints the case.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn shared_bytes_compare_and_hash_as_their_bytes(
        a in bytes_around_inline_limit(),
        b in bytes_around_inline_limit(),
    ) {
        let (sa, sb) = (SharedBytes::from(a.clone()), SharedBytes::from(b.as_slice()));
        prop_assert_eq!(sa.as_slice(), a.as_slice());
        prop_assert_eq!(sb.as_slice(), b.as_slice());
        prop_assert_eq!(sa.cmp(&sb), a.cmp(&b));
        prop_assert_eq!(sa == sb, a == b);
        let hasher = RandomState::new();
        // Borrow<[u8]> lookups need the key and its bytes to hash alike.
        prop_assert_eq!(hasher.hash_one(&sa), hasher.hash_one(a.as_slice()));
        prop_assert_eq!(sa.clone(), SharedBytes::from(a.as_slice()));
    }

    /// A packed value gives back what it was made of, and two are equal exactly when that is.
    #[test]
    fn stored_values_keep_their_fields(
        a in (bytes_around_inline_limit(), any::<u64>(), proptest::option::of(any::<u64>())),
        b in (bytes_around_inline_limit(), 0u64..3, proptest::option::of(0u64..3)),
    ) {
        let pack = |(value, version, expiry): &(Vec<u8>, u64, Option<u64>)| Stored::with_expiry(value, *version, *expiry);
        let (sa, sb) = (pack(&a), pack(&b));
        prop_assert_eq!(sa.value(), a.0.as_slice());
        prop_assert_eq!(sa.version(), a.1);
        prop_assert_eq!(sa.expire_at_ms(), a.2);
        prop_assert_eq!(sa.kind(), ValueKind::String);
        prop_assert_eq!(sa.is_live(0), true);
        prop_assert_eq!(sa.is_live(u64::MAX), a.2.is_none_or(|at| at == u64::MAX));
        prop_assert_eq!(sa == sb, a == b);
        prop_assert_eq!(Stored::new(&a.0, a.1), Stored::with_expiry(&a.0, a.1, None));
    }

    /// Reads and scans agree with a model at every step, while snapshot copies are taken and
    /// the writes held aside for them put back (`snapshot`: 0 nothing, 1 copy, 2 copy released
    /// and up to `drain` writes put back, 3 all put back); every copy keeps reading as the model
    /// did when it was taken.
    #[test]
    fn engine_matches_a_btreemap_model(
        batches in prop::collection::vec((prop::collection::vec(op(), 0..6), 0u8..4, 0usize..4), 0..20),
        scans in prop::collection::vec((cf(), key(), 0usize..6), 1..8),
    ) {
        let mut engine = KvEngine::new();
        let mut model: Model = BTreeMap::new();
        let mut copies: Vec<(KvEngine, Model)> = Vec::new();
        for (batch, snapshot, drain) in batches {
            match snapshot {
                1 => copies.push((engine.copy_for_snapshot(), model.clone())),
                2 => {
                    engine.release_snapshot_copy();
                    engine.drain_deferred(drain);
                }
                3 => engine.apply_deferred(),
                _ => {}
            }
            let mut wb = WriteBatch::new();
            for op in batch {
                match op {
                    Op::Put(c, k, v) => {
                        model.insert((c, k.clone()), v.clone());
                        wb.put(c, k, v);
                    }
                    Op::Delete(c, k) => {
                        model.remove(&(c, k.clone()));
                        wb.delete(c, k);
                    }
                }
            }
            engine.write(wb);
            check_against(&engine, &model)?;
            for (copy, then) in &copies {
                check_against(copy, then)?;
            }
        }
        // The same content built without copies or held writes is equal, digest included.
        let mut rebuilt = KvEngine::new();
        let mut wb = WriteBatch::new();
        for ((c, k), v) in &model {
            wb.put(*c, k.clone(), v.clone());
        }
        rebuilt.write(wb);
        prop_assert_eq!(engine.digest(), rebuilt.digest());
        prop_assert!(engine == rebuilt);
        engine.apply_deferred();
        prop_assert!(engine == rebuilt);
        for (c, start, limit) in scans {
            let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                .range((c, start.clone())..)
                .take_while(|((mc, _), _)| *mc == c)
                .take(limit)
                .map(|((_, k), v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(engine.scan_cf(c, &start, limit), expected);
        }
    }
}

type Model = BTreeMap<(ColumnFamily, Vec<u8>), Vec<u8>>;

/// Every read of `engine` (point, scan, counts, size) gives what `model` holds.
fn check_against(engine: &KvEngine, model: &Model) -> Result<(), TestCaseError> {
    for ((c, k), v) in model {
        prop_assert_eq!(engine.get_cf(*c, k), Some(v.as_slice()));
    }
    prop_assert_eq!(engine.len(), model.len());
    let size: usize = model.iter().map(|((_, k), v)| k.len() + v.len()).sum();
    prop_assert_eq!(engine.approximate_size_bytes(), size as u64);
    for c in ColumnFamily::ALL {
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().filter(|((mc, _), _)| *mc == c).map(|((_, k), v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(engine.len_cf(c), expected.len());
        prop_assert_eq!(engine.scan_cf(c, &[], usize::MAX), expected);
    }
    Ok(())
}

#[test]
fn families_are_separate_key_spaces() {
    let mut engine = KvEngine::new();
    let mut wb = WriteBatch::new();
    wb.put(ColumnFamily::Default, b"k".to_vec(), b"d".to_vec()).put(
        ColumnFamily::Lock,
        b"k".to_vec(),
        b"l".to_vec(),
    );
    engine.write(wb);
    assert_eq!(engine.get_cf(ColumnFamily::Default, b"k"), Some(&b"d"[..]));
    assert_eq!(engine.get_cf(ColumnFamily::Lock, b"k"), Some(&b"l"[..]));
    assert_eq!(engine.get_cf(ColumnFamily::Write, b"k"), None);
    assert_eq!(engine.scan_cf(ColumnFamily::Write, b"", 10), vec![]);
}

#[test]
fn digest_depends_only_on_content() {
    use quorumkv::protocol::command::ColumnFamily;
    use quorumkv::storage::{KvEngine, WriteBatch};
    let mut a = KvEngine::new();
    let mut b = KvEngine::new();
    let mut batch = WriteBatch::new();
    batch.put(ColumnFamily::Default, b"x".to_vec(), b"1".to_vec());
    batch.put(ColumnFamily::Lock, b"y".to_vec(), b"2".to_vec());
    a.write(batch);
    // Same content reached another way: other order, an overwrite and a delete on the way.
    let mut batch = WriteBatch::new();
    batch.put(ColumnFamily::Lock, b"y".to_vec(), b"old".to_vec());
    batch.put(ColumnFamily::Default, b"z".to_vec(), b"gone".to_vec());
    batch.put(ColumnFamily::Lock, b"y".to_vec(), b"2".to_vec());
    batch.put(ColumnFamily::Default, b"x".to_vec(), b"1".to_vec());
    batch.delete(ColumnFamily::Default, b"z".to_vec());
    b.write(batch);
    assert_eq!(a.digest(), b.digest());
    let mut batch = WriteBatch::new();
    batch.put(ColumnFamily::Write, b"x".to_vec(), b"1".to_vec());
    b.write(batch);
    assert_ne!(a.digest(), b.digest(), "a different family is different content");
    assert_ne!(KvEngine::new().digest(), a.digest());
}

#[test]
fn digest_tells_apart_where_key_ends_and_trailing_zeros() {
    use quorumkv::protocol::command::ColumnFamily;
    use quorumkv::storage::{KvEngine, WriteBatch};
    let digest_of = |pairs: &[(&[u8], &[u8])]| {
        let mut engine = KvEngine::new();
        let mut batch = WriteBatch::new();
        for (k, v) in pairs {
            batch.put(ColumnFamily::Default, k.to_vec(), v.to_vec());
        }
        engine.write(batch);
        engine.digest()
    };
    let cases: [&[(&[u8], &[u8])]; 6] = [
        &[(b"ab", b"c")],
        &[(b"a", b"bc")],
        &[(b"a", b"b\0")],
        &[(b"a", b"b")],
        &[(b"key-0001", b"value-that-is-longer-than-eight-bytes")],
        &[(b"key-0001", b"value-that-is-longer-than-eight-byteS")],
    ];
    let digests: Vec<u64> = cases.iter().map(|c| digest_of(c)).collect();
    for (i, a) in digests.iter().enumerate() {
        for b in &digests[i + 1..] {
            assert_ne!(a, b, "{digests:?}");
        }
    }
}
