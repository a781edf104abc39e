/** Small text helpers shared by error messages. */

/** Levenshtein distance, for "did you mean". */
export const editDistance = (a: string, b: string): number => {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const cur = [i]
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = cur
  }
  return prev[b.length]!
}

/** The names within edit distance 2 of `name` (case-insensitive), for " (did you mean ...?)". */
export const nearNames = (name: string, names: readonly string[]): string[] =>
  names.filter((n) => editDistance(n.toLowerCase(), name.toLowerCase()) <= 2)

/** ` (did you mean "a" or "b"?)`, or "" when nothing is near. */
export const didYouMean = (name: string, names: readonly string[]): string => {
  const near = nearNames(name, names)
  return near.length > 0 ? ` (did you mean ${near.map((n) => `"${n}"`).join(" or ")}?)` : ""
}
