package witness

// Kept is the encoding a Cosigner gives its Keeper, for the tests to damage.
type Kept = kept

// KeptFormat is the format Kept carries.
const KeptFormat = keptFormat
