/** The label that marks a warm-pool member with its template's name (removed when it is claimed). */
export const POOL_LABEL = 'cordon.pool';
