//! Typed ids: a cart's id cannot be passed where an order's is expected, and
//! an id is a UUID from the moment it is parsed at the edge. Strings are for
//! the wire and the database; these are for everything in between.

use std::fmt;

use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered by creation time (UUIDv7).
            pub fn generate() -> $name {
                $name(Uuid::now_v7())
            }

            /// The id in `raw`, if it is a UUID.
            pub fn parse(raw: &str) -> Option<$name> {
                Uuid::parse_str(raw).ok().map($name)
            }

            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> $name {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An order's id; its saga has the same id.
    OrderId
);
uuid_id!(
    /// A cart's id.
    CartId
);
uuid_id!(
    /// A user account's id.
    UserId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_uuids_and_print_as_they_were_given() {
        let raw = "0190c3a4-5b6e-7c8d-9e0f-1a2b3c4d5e6f";
        assert_eq!(OrderId::parse(raw).unwrap().to_string(), raw);
        assert!(CartId::parse("not-a-uuid").is_none());
        assert!(UserId::parse("").is_none());
        let generated = OrderId::generate();
        assert_eq!(OrderId::parse(&generated.to_string()), Some(generated));
    }
}
