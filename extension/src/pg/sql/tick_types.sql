-- Composite results of the tick aggregates (Binance field names; see ticks.sql).
CREATE TYPE ta.kline AS (
    open numeric, high numeric, low numeric, close numeric, volume numeric, quote_volume numeric,
    trades bigint, taker_buy_volume numeric, taker_buy_quote_volume numeric,
    first_trade_id bigint, last_trade_id bigint, first_agg_trade_id bigint, last_agg_trade_id bigint);
COMMENT ON TYPE ta.kline IS 'Result of ta.kline: the fields of a Binance kline built from its trades (kline stream o, h, l, c, v, q, n, V, Q, f, L), numeric (exact): open/close = price of the lowest/highest agg_trade_id, high/low = max/min price, volume = sum of quantity (base units), quote_volume = sum of price*quantity (quote units), trades = sum of (last_trade_id - first_trade_id + 1), taker_buy_volume/taker_buy_quote_volume = the same sums over trades with is_buyer_maker = false; first_trade_id/last_trade_id = min f/max l; first_agg_trade_id/last_agg_trade_id = the aggregate trade ids of open and close.';
CREATE TYPE ta.trade_features AS (
    vwap double precision, trades bigint, taker_buy_ratio double precision, signed_volume numeric);
COMMENT ON TYPE ta.trade_features IS 'Result of ta.trade_features: vwap = quote_volume / volume (price units; NULL when volume = 0), trades = trade count, taker_buy_ratio = taker_buy_volume / volume (0..1; NULL when volume = 0), signed_volume = taker buys minus taker sells = 2*taker_buy_volume - volume (base units, exact numeric). The quotients divide the sums converted to the nearest double precision.';
CREATE TYPE ta.book_features AS (
    imbalance double precision, spread_bps double precision, spread_bps_last double precision,
    weighted_mid double precision, mid double precision, weighted_mid_offset_bps double precision,
    updates bigint);
COMMENT ON TYPE ta.book_features IS 'Result of ta.book_features (one bucket of best bid/ask updates): imbalance = time-weighted mean of (B - A)/(B + A) (-1..1; NULL when no quote has B + A > 0), spread_bps = time-weighted mean of (a - b)/mid * 10^4 (basis points), spread_bps_last = that of the last quote, weighted_mid = (a*B + b*A)/(A + B) of the last quote (price units; Stoikov 2018; NULL when A + B = 0), mid = (a + b)/2 of the last quote, weighted_mid_offset_bps = (weighted_mid - mid)/mid * 10^4, updates = number of quotes. b/B = best bid price/quantity, a/A = best ask price/quantity.';
