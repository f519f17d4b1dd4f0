-- kiln controller state, schema 13: git sources (issue 5). One row per bare git mirror kept at
-- DATA/git/NAME.git; a name stays bound to the origin it was first added from. When
-- allowed_signers is not NULL (git's allowed-signers format), only commits carrying an SSH
-- signature by one of those keys may be used.
CREATE TABLE git_mirrors (
    name             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    origin           TEXT NOT NULL,
    added_at         TEXT NOT NULL,
    allowed_signers  TEXT
);
