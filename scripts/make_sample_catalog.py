"""Generate rankwise's bundled sample catalog (src/rankwise/sample/products.jsonl).

Written for the demo: a few hundred Chinese and English products with the traps that
first-stage recall falls into: 苹果手机 (an iPhone) vs 苹果 (the fruit); summer breathable
running shoes vs leather shoes described as "breathable" and "for summer"; a drill that
never uses the words a shopper types. Deterministic (fixed seed): rerun to regenerate.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "rankwise" / "sample"

rng = random.Random(7)
products: list[dict] = []


def add(title: str, text: str, category: str, brand: str, price: float, lang: str) -> None:
    products.append(
        {
            "id": f"p{len(products) + 1:04d}",
            "title": title,
            "text": text,
            "category": category,
            "brand": brand,
            "price": round(price, 2),
            "lang": lang,
            "in_stock": rng.random() > 0.15,
        }
    )


# --- phones (zh + en): the 苹果手机 trap ------------------------------------------------
colors_zh = ["黑色", "白色", "蓝色", "紫色", "金色"]
for model in ["iPhone 13", "iPhone 14", "iPhone 14 Pro", "iPhone 15", "iPhone 15 Pro Max", "iPhone SE"]:
    for storage in ["128G", "256G"]:
        c = rng.choice(colors_zh)
        add(f"Apple {model} {storage} {c} 5G全网通", f"A系列芯片，超视网膜显示屏，{storage}存储，支持面容ID，双卡双待智能机。", "手机", "Apple", rng.uniform(3999, 9999), "zh")
for model, brand in [("Mate 60 Pro", "华为"), ("P60", "华为"), ("Mi 14", "小米"), ("Redmi K70", "小米"), ("Find X7", "OPPO"), ("X100", "vivo"), ("Galaxy S24", "三星")]:
    add(f"{brand} {model} 5G智能手机 12+256G", f"{brand}旗舰手机，徕卡影像/长焦镜头，快充，曲面屏，智能拍照。", "手机", brand, rng.uniform(2499, 6999), "zh")
for model in ["iPhone 15", "iPhone 15 Pro", "iPhone 14"]:
    add(f"Apple {model} 128GB Unlocked Smartphone", "A16/A17 chip, Super Retina XDR display, advanced dual-camera system, Face ID.", "phones", "Apple", rng.uniform(699, 1199), "en")
add("Google Pixel 8 Pro 256GB Smartphone", "Tensor G3, Night Sight low-light photography, 50MP main camera, 7 years of updates.", "phones", "Google", 999, "en")
add("Samsung Galaxy S24 Ultra 512GB", "Snapdragon 8 Gen 3, 200MP camera with Nightography, S Pen built in.", "phones", "Samsung", 1299, "en")
# accessories that mention the phone
for acc in ["手机壳 硅胶 防摔", "钢化膜 高清 全屏", "快充数据线 1米", "MagSafe 磁吸充电器"]:
    add(f"适用苹果iPhone 15 {acc}", f"兼容苹果手机，{acc}，精准开孔。", "手机配件", rng.choice(["倍思", "绿联", "Anker"]), rng.uniform(19, 199), "zh")

# --- fruit (zh + en): apples and friends ---------------------------------------------
for origin in ["烟台", "阿克苏", "洛川", "静宁", "昭通", "威海"]:
    for kind, spec in [("红富士苹果", "5斤装"), ("冰糖心苹果", "10斤整箱"), ("嘎啦苹果", "3斤")]:
        add(f"{origin}{kind} 新鲜水果 {spec}", f"{origin}产地直发，脆甜多汁，当季现摘苹果，果径75-80mm。", "水果", f"{origin}果园", rng.uniform(19.9, 89), "zh")
for f, desc in [("赣南脐橙 10斤", "橙子 新鲜 甜"), ("海南香蕉 5斤", "自然熟 香甜软糯"), ("丹东草莓 3斤", "奶油草莓 现摘"), ("库尔勒香梨 5斤", "皮薄汁多"), ("阳光玫瑰葡萄 2斤", "无籽 脆甜")]:
    add(f"{f} 新鲜水果", desc, "水果", "鲜果坊", rng.uniform(19.9, 79), "zh")
for variety in ["Honeycrisp", "Gala", "Fuji", "Granny Smith", "Pink Lady"]:
    add(f"{variety} Apples, 3 lb Bag", f"Fresh {variety} apples, crisp and juicy, great for snacking and baking.", "fruit", "Orchard Fresh", rng.uniform(3.99, 7.99), "en")
add("Organic Bananas, 2 lb", "Fresh organic bananas.", "fruit", "Orchard Fresh", 1.99, "en")
add("Apple Cider Vinegar, 32 oz", "Raw, unfiltered apple cider vinegar with the mother.", "grocery", "Bragg", 5.49, "en")

# --- shoes: the summer running vs leather trap --------------------------------------
for brand in ["Nike", "Adidas", "Asics", "New Balance", "Brooks", "Hoka"]:
    add(f"{brand} Men's Lightweight Mesh Running Shoes", "Breathable knit mesh upper keeps feet cool on hot summer runs; cushioned foam midsole for road running.", "shoes", brand, rng.uniform(69, 159), "en")
    add(f"{brand} Women's Trail Running Shoe", "Grippy outsole, rock plate, water-resistant upper for wet trails.", "shoes", brand, rng.uniform(79, 169), "en")
for brand in ["Clarks", "Cole Haan", "Allen Edmonds", "Florsheim"]:
    add(f"{brand} Men's Leather Oxford Dress Shoes", "Full-grain leather upper with a breathable leather lining, perfect for summer weddings and the office.", "shoes", brand, rng.uniform(89, 249), "en")
    add(f"{brand} Leather Loafers for Summer", "Classic penny loafer in soft breathable leather, a summer wardrobe staple for business casual.", "shoes", brand, rng.uniform(79, 199), "en")
for brand in ["李宁", "安踏", "特步", "361度"]:
    add(f"{brand}夏季透气跑步鞋 男款 网面轻便运动鞋", "飞织网面透气，夏天跑步不闷脚，缓震回弹中底，适合路跑训练。", "鞋", brand, rng.uniform(199, 599), "zh")
for brand in ["红蜻蜓", "奥康", "金利来"]:
    add(f"{brand}真皮皮鞋 男士商务正装鞋 夏季透气", "头层牛皮，透气内里，夏季商务正装，婚鞋。", "鞋", brand, rng.uniform(299, 899), "zh")
add("Crocs Classic Clog", "Lightweight, water-friendly, summer sandals-style clog.", "shoes", "Crocs", 49.99, "en")

# --- tools: the paraphrase case --------------------------------------------------------
add("DeWalt 20V MAX Cordless Drill/Driver Kit", "Brushless motor, 1/2 in. keyless chuck, two 2.0Ah lithium-ion packs and charger included.", "tools", "DeWalt", 159, "en")
add("Milwaukee M18 Hammer Drill Kit", "Brushless, 1,200 in-lbs torque, for masonry and concrete.", "tools", "Milwaukee", 229, "en")
for t, d in [
    ("Stanley 25 ft. Tape Measure", "Blade armor coating, 11 ft standout."),
    ("Craftsman 16 oz. Claw Hammer", "Fiberglass handle, anti-vibration grip."),
    ("Bosch Laser Distance Measure", "Measures up to 165 ft with 1/16 in. accuracy."),
    ("Ryobi 18V Circular Saw", "5-1/2 in. blade, 4,700 RPM, bevel up to 50 degrees."),
    ("Husky 120-Piece Mechanics Tool Set", "Ratchets, sockets and wrenches in a blow-molded case."),
    ("WD-40 Multi-Use Lubricant, 12 oz", "Stops squeaks, protects from rust and corrosion."),
    ("Gorilla Heavy Duty Construction Adhesive", "Bonds wood, metal, stone and more, indoor and outdoor."),
    ("3M Sandpaper Assorted Grit 10-Pack", "Aluminum oxide for wood and metal sanding."),
]:
    add(t, d, "tools", t.split()[0], rng.uniform(9, 149), "en")
add("博世 家用手电钻 12V 锂电充电式", "双速调节，附钻头套装，家庭装修打孔。", "工具", "博世", 399, "zh")

# --- electronics --------------------------------------------------------------------------
for brand, model in [("Sony", "WH-1000XM5"), ("Bose", "QuietComfort Ultra"), ("Apple", "AirPods Max"), ("Sennheiser", "Momentum 4")]:
    add(f"{brand} {model} Wireless Noise Cancelling Headphones", "Over-ear Bluetooth headphones with active noise cancellation and 30-hour battery.", "audio", brand, rng.uniform(249, 549), "en")
add("Apple AirPods Pro (2nd generation)", "In-ear earbuds with active noise cancellation, USB-C MagSafe case.", "audio", "Apple", 249, "en")
add("JBL Flip 6 Portable Bluetooth Speaker", "Waterproof IP67, 12 hours of playtime.", "audio", "JBL", 129, "en")
for brand, model in [("联想", "小新Pro 14"), ("华为", "MateBook 14"), ("小米", "Redmi Book 16"), ("Apple", "MacBook Air 13 M3")]:
    add(f"{brand} {model} 轻薄笔记本电脑 16G 512G", "高性能处理器，2.8K高刷屏，长续航，全金属机身，办公学习本。", "电脑", brand, rng.uniform(3999, 8999), "zh")
for brand, model in [("Dell", "XPS 13"), ("Lenovo", "ThinkPad X1 Carbon"), ("Apple", "MacBook Pro 14 M3"), ("HP", "Spectre x360")]:
    add(f"{brand} {model} Laptop", "Thin and light ultrabook, 16GB RAM, 512GB SSD, all-day battery.", "computers", brand, rng.uniform(999, 2499), "en")
add("Apple iPad Air 11-inch M2", "Liquid Retina display, Touch ID, works with Apple Pencil Pro.", "tablets", "Apple", 599, "en")
add("Apple Watch Series 9 GPS 45mm", "Blood oxygen, ECG, always-on Retina display.", "wearables", "Apple", 429, "en")
add("小米手环8 NFC版", "血氧心率监测，150+运动模式，16天续航。", "穿戴", "小米", 249, "zh")

# --- home & kitchen -----------------------------------------------------------------------
kitchen_en = [
    ("Stainless Steel Kitchen Sink Faucet with Pull-Down Sprayer", "Single handle, spot-resistant finish."),
    ("Instant Pot Duo 7-in-1 Electric Pressure Cooker, 6 Qt", "Pressure cooker, slow cooker, rice cooker, steamer."),
    ("Ninja Professional Blender 1000W", "Total crushing blades for ice and frozen fruit."),
    ("Lodge Cast Iron Skillet, 12 inch", "Pre-seasoned, oven safe."),
    ("KitchenAid Artisan Stand Mixer 5 Qt", "10 speeds, tilt-head design."),
    ("Keurig K-Classic Coffee Maker", "Single serve K-Cup pod brewer."),
    ("Dyson V15 Detect Cordless Vacuum", "Laser reveals microscopic dust, HEPA filtration."),
    ("Honeywell HEPA Air Purifier", "Captures 99.97% of airborne particles, for large rooms."),
    ("LED Ceiling Light Fixture, Flush Mount 12 in.", "Dimmable, 3000K warm white, energy saving."),
    ("Moen Rainshower Showerhead", "8 in. rain shower head, chrome."),
]
for t, d in kitchen_en:
    add(t, d, "home", t.split()[0], rng.uniform(19, 599), "en")
kitchen_zh = [
    ("美的 电饭煲 4L 智能预约", "IH加热，多功能菜单，家用3-4人。", "美的"),
    ("九阳 豆浆机 破壁免滤", "多功能料理，一键清洗。", "九阳"),
    ("苏泊尔 不粘炒锅 32cm", "麦饭石涂层，燃气电磁炉通用。", "苏泊尔"),
    ("格力 空调 1.5匹 变频冷暖", "一级能效，静音，自清洁。", "格力"),
    ("小米 扫地机器人 激光导航", "扫拖一体，自动集尘。", "小米"),
    ("飞利浦 电动牙刷 声波震动", "5种模式，2分钟智能计时。", "飞利浦"),
]
for t, d, b in kitchen_zh:
    add(t, d, "家居", b, rng.uniform(99, 3999), "zh")

# --- apparel, tea, books ---------------------------------------------------------------------
for item, desc in [
    ("Men's Quick-Dry Running Shorts", "Lightweight, moisture-wicking fabric with liner, for summer training."),
    ("Women's Breathable Yoga Leggings", "High-waist, squat-proof, four-way stretch."),
    ("Unisex Cotton Crew Neck T-Shirt 3-Pack", "Soft 100% cotton, tagless."),
    ("Waterproof Rain Jacket", "Packable, breathable, with hood."),
    ("Merino Wool Hiking Socks", "Cushioned, odor resistant."),
]:
    add(item, desc, "apparel", rng.choice(["Under Armour", "Lululemon", "Hanes", "Columbia", "Smartwool"]), rng.uniform(12, 99), "en")
for item, desc in [
    ("西湖龙井 明前特级 250g", "绿茶，豆香浓郁，春茶。"),
    ("安溪铁观音 清香型 500g", "乌龙茶，兰花香。"),
    ("云南普洱熟茶 357g 茶饼", "陈香醇厚。"),
    ("纯棉短袖T恤 男 夏季", "透气吸汗，宽松休闲。"),
    ("冰丝防晒衣 女 夏季 UPF50+", "轻薄透气，户外骑行。"),
]:
    add(item, desc, "食品饮料" if "茶" in item else "服装", rng.choice(["茶香坊", "森马", "蕉下", "优衣库"]), rng.uniform(39, 399), "zh")

# --- fill to a few hundred with plausible variants ----------------------------------------------
fillers_en = [
    ("Garden Hose {n} ft, Expandable", "Lightweight expandable hose with 9-pattern spray nozzle.", "garden"),
    ("Cordless Leaf Blower {n}V", "Brushless, variable speed, battery and charger included.", "garden"),
    ("Interior Paint, Eggshell, 1 Gallon, Shade {n}", "Low-VOC, one-coat coverage, washable finish.", "paint"),
    ("Wood Screws #8 x {n}/4 in., 100-Pack", "Zinc-plated, coarse thread.", "hardware"),
    ("LED Light Bulbs A19 {n}-Pack", "60W equivalent, soft white, dimmable.", "lighting"),
    ("Storage Shelving Unit {n}-Tier", "Steel wire shelves, 300 lb per shelf.", "storage"),
]
fillers_zh = [
    ("家用五金工具箱 {n}件套", "扳手螺丝刀锤子，多功能维修组合。", "工具"),
    ("LED吸顶灯 卧室 {n}W 三色调光", "护眼无频闪，简约现代。", "灯具"),
    ("乳胶漆 内墙 环保 {n}L", "净味抗碱，墙面翻新。", "装修"),
    ("花园浇水软管 {n}米 伸缩", "多功能喷头，洗车浇花。", "园艺"),
]
n_fill = 0
while len(products) < 300:
    t, d, c = rng.choice(fillers_en + fillers_zh)
    n = rng.randint(2, 12)
    lang = "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in t) else "en"
    add(t.format(n=n * 5 if "Hose" in t or "软管" in t else n), d, c, rng.choice(["Home Basics", "好帮手", "Everbilt", "欧普"]), rng.uniform(9, 199), lang)
    n_fill += 1

QUERIES = [
    {"query": "苹果手机", "note": "wants an iPhone; BM25 also matches 苹果 fruit and phone cases"},
    {"query": "红富士苹果", "note": "wants the fruit, not the phone"},
    {"query": "summer breathable running shoes", "note": "leather shoes also say 'breathable' and 'summer'"},
    {"query": "夏季透气跑步鞋", "note": "same intent in Chinese; 皮鞋 also say 夏季透气"},
    {"query": "battery powered tool for making holes", "note": "paraphrase: the drill's text uses none of these words"},
    {"query": "wireless noise cancelling headphones", "note": "filters can narrow by price"},
    {"query": "轻薄笔记本电脑", "note": "thin and light laptop"},
]

OUT.mkdir(parents=True, exist_ok=True)
with (OUT / "products.jsonl").open("w", encoding="utf-8") as fh:
    for p in products:
        fh.write(json.dumps(p, ensure_ascii=False) + "\n")
(OUT / "queries.json").write_text(json.dumps(QUERIES, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
print(f"wrote {len(products)} products ({n_fill} fillers) and {len(QUERIES)} queries to {OUT}")
