// The server's built-in actions (crates/interaction-core/src/profile.rs): checked by a Rust test.
export const ACTIONS = [
  'view_recommendation',
  'impression',
  'click',
  'play',
  'watch',
  'watch_complete',
  'like',
  'dislike',
  'add_to_watchlist',
  'add_to_favorites',
  'remove_from_watchlist',
  'remove_from_favorites',
  'share',
  'view_product',
  'click_product',
  'add_to_cart',
  'purchase',
  'add_to_wishlist',
  'remove_from_wishlist',
  'review',
  'share_product',
] as const;

/** An action of the server's built-in rating profiles (`video` and `ecommerce`). */
export type Action = (typeof ACTIONS)[number];

/** The spec's interaction types, for events that carry `interaction` (+ `ratingEquivalent`). */
export type Interaction =
  | 'recommendationImpression'
  | 'select'
  | 'play'
  | 'play_complete'
  | 'rate'
  | 'deselect'
  | 'share'
  | 'add_to_cart'
  | 'purchase';

/** `add_to_watchlist` → `addToWatchlist`. */
export type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}`
  ? `${Head}${Capitalize<CamelCase<Tail>>}`
  : S;

/** The actions that take a number, and the field it goes to. */
export const NUMERIC_FIELD = { watch: 'progress', review: 'stars' } as const;

/** Fields a helper accepts besides the asset (and the number of `watch` / `review`). */
export interface HelperExtra {
  subscriber?: string;
  comment?: string;
  contextId?: string;
  timestamp?: Date | string | number;
}

type Helper<A extends Action> = A extends keyof typeof NUMERIC_FIELD
  ? (assetId: string, value: number, extra?: HelperExtra) => string
  : (assetId: string, extra?: HelperExtra) => string;

/**
 * One method per action, named in camelCase: `logger.addToWatchlist(assetId)` sends
 * `action: 'add_to_watchlist'`; `logger.watch(assetId, 0.9)` sends `progress: 0.9`;
 * `logger.review(assetId, 5)` sends `stars: 5`. Each returns the event's `eventId` ('' when
 * the event was not queued).
 */
export type ActionHelpers = { [A in Action as CamelCase<A>]: Helper<A> };

export const camelCase = (name: string): string =>
  name.replace(/_(.)/g, (_, c: string) => c.toUpperCase());
