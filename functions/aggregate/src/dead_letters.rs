//! The dead-letter step of a batch: records that cannot be counted go to the dead-letter topic
//! once per offset. A batch that failed after this step comes back whole; the marks stored in
//! MongoDB (see `reactions::mongo::DeadLetterMarks`) say which of its dead letters were already
//! produced. A dead-letter topic that is missing or refuses the records fails the batch with an
//! error naming it, and a `DeadLetterFailures` metric that the template alarms on: the
//! partition is blocked until then, and nothing is skipped.

use crate::batch::DeadLetter;
use reactions::window_delta::PartitionKey;
use std::collections::BTreeMap;

/// The dead letters not produced yet, and the marks to store once they are: per partition, the
/// highest offset among them.
pub fn unsent<'a>(
    dead_letters: &'a [DeadLetter],
    marks: &BTreeMap<PartitionKey, i64>,
) -> (Vec<&'a DeadLetter>, BTreeMap<PartitionKey, i64>) {
    let mut highest = BTreeMap::new();
    let letters = dead_letters
        .iter()
        .filter(|letter| {
            let partition = PartitionKey::of(&letter.position);
            let sent = marks
                .get(&partition)
                .is_some_and(|mark| letter.position.offset <= *mark);
            if !sent {
                let entry = highest.entry(partition).or_insert(letter.position.offset);
                *entry = (*entry).max(letter.position.offset);
            }
            !sent
        })
        .collect();
    (letters, highest)
}

/// The partitions the dead letters came from, each once.
pub fn partitions(dead_letters: &[DeadLetter]) -> Vec<PartitionKey> {
    let mut partitions: Vec<PartitionKey> = dead_letters
        .iter()
        .map(|letter| PartitionKey::of(&letter.position))
        .collect();
    partitions.sort();
    partitions.dedup();
    partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::kafka_event::RecordPosition;

    fn letter(partition: i32, offset: i64) -> DeadLetter {
        DeadLetter {
            position: RecordPosition {
                topic: "emoji-reaction-topic".into(),
                partition,
                offset,
                generation: 0,
            },
            reason: "bad_json",
            error: "x".into(),
            key: None,
            value: b"{".to_vec(),
        }
    }

    fn key(partition: i32) -> PartitionKey {
        PartitionKey {
            topic: "emoji-reaction-topic".into(),
            partition,
            generation: 0,
        }
    }

    #[test]
    fn letters_at_or_below_their_partitions_mark_were_sent() {
        let letters = [letter(0, 5), letter(0, 9), letter(1, 3), letter(1, 7)];
        let marks = BTreeMap::from([(key(0), 9), (key(1), 4)]);
        let (unsent, highest) = unsent(&letters, &marks);
        let offsets: Vec<(i32, i64)> = unsent
            .iter()
            .map(|l| (l.position.partition, l.position.offset))
            .collect();
        assert_eq!(offsets, [(1, 7)]);
        assert_eq!(highest, BTreeMap::from([(key(1), 7)]));
    }

    #[test]
    fn without_marks_everything_is_sent_and_marked_at_its_highest() {
        let letters = [letter(0, 9), letter(0, 5), letter(2, 1)];
        let (unsent, highest) = unsent(&letters, &BTreeMap::new());
        assert_eq!(unsent.len(), 3);
        assert_eq!(highest, BTreeMap::from([(key(0), 9), (key(2), 1)]));
        assert_eq!(partitions(&letters), [key(0), key(2)]);
    }
}
