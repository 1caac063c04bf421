"""The self-distillation prompt set: our own templates × our own slot lists, never Spec-Bench.

Trained drafters learn what the embedded model tends to say, so the prompts only need to be
diverse in task (chat, writing, code, math, summarisation, translation, explanation, extraction,
role-play, reasoning). Every prompt here is composed from the lists below, which were written
for this project; the 120 hand-written prompts of `assets/prompts/selfdistill_prompts.jsonl` are
added on top. The composition is seeded, so the set is the same on every machine. Last come the
user queries the embedded model wrote itself (`queries.py`), shipped in `assets/prompts`: they
bring the topics no template list can.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from .queries import load_queries

ASSETS = Path(__file__).resolve().parents[2] / "assets"
HANDWRITTEN = ASSETS / "prompts" / "selfdistill_prompts.jsonl"

TOPICS = [
    "saving money on groceries", "learning to cook", "sleeping better", "starting to run", "keeping a journal",
    "moving to a new city", "working from home", "learning a second language", "growing tomatoes on a balcony",
    "training a puppy", "preparing for a job interview", "public speaking", "making friends as an adult",
    "reading more books", "reducing screen time", "planning a road trip", "hosting a dinner party",
    "studying for exams", "writing a cover letter", "negotiating a salary", "caring for houseplants",
    "choosing a laptop", "learning to draw", "staying motivated", "cleaning a small flat", "composting at home",
    "teaching a child to ride a bike", "budgeting for a holiday", "learning to swim", "baking bread",
    "taking better photos with a phone", "organising a bookshelf", "dealing with stress at work",
    "volunteering locally", "starting a podcast", "keeping bees", "repairing a bicycle puncture",
    "writing a short story", "learning chess", "running a book club",
]
THINGS = [
    "the moon", "volcanoes", "honey bees", "the printing press", "rainbows", "glaciers", "the internet",
    "electric cars", "coral reefs", "the human heart", "black holes", "vaccines", "photosynthesis",
    "the Roman Empire", "earthquakes", "solar panels", "the water cycle", "DNA", "tides", "bread yeast",
    "the stock market", "compound interest", "recycling", "the immune system", "lightning", "wind turbines",
    "the Silk Road", "penguins", "batteries", "clouds", "the Olympic Games", "maps", "coffee", "bridges",
    "the telescope", "octopuses", "inflation", "democracy", "the alphabet", "trains",
]
AUDIENCES = ["a ten-year-old", "a busy parent", "a first-year student", "my grandmother", "a new employee",
             "a curious teenager", "someone who has never heard of it", "a classroom of beginners"]
FORMS = ["a short poem", "a haiku", "a limerick", "a two-paragraph story", "a diary entry", "a product description",
         "a friendly email", "a motivational speech", "a news headline and summary", "a recipe-style guide",
         "a thank-you note", "a tweet", "a letter to the editor", "a dialogue between two friends"]
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "counts the vowels in a sentence",
    "returns the largest element of a list", "merges two sorted lists", "computes the factorial of n",
    "removes duplicates from a list while keeping order", "checks whether a word is a palindrome",
    "converts Celsius to Fahrenheit", "computes the n-th Fibonacci number", "flattens a nested list",
    "counts word frequencies in a text", "finds the second smallest number in a list",
    "validates a simple email address", "sorts a list of dictionaries by a key", "reads a CSV file and sums a column",
    "returns the greatest common divisor of two numbers", "capitalises every word of a sentence",
    "checks whether two strings are anagrams", "rotates a list by k positions", "implements binary search",
    "computes the average of a list of numbers", "finds all even numbers in a list", "transposes a matrix",
]
LANGUAGES = ["Python", "JavaScript", "C", "Java", "Go", "Rust", "a shell script"]
CODE_QUESTIONS = [
    "What is the difference between a list and a tuple in Python?", "Explain what a hash map is and when to use one.",
    "What does recursion mean in programming? Give an example.", "Explain the difference between a class and an object.",
    "What is a unit test and why is it useful?", "Explain what Big-O notation tells us.",
    "What is the difference between a process and a thread?", "Explain what a REST API is.",
    "What does 'git rebase' do compared with 'git merge'?", "Why do programmers use version control?",
    "What is a null pointer error and how can it be avoided?", "Explain the idea of a stack and a queue.",
]
PEOPLE = ["Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam"]
ITEMS = [("apples", 3), ("pencils", 2), ("books", 12), ("stickers", 1), ("cakes", 4), ("tickets", 15),
         ("marbles", 1), ("notebooks", 5), ("oranges", 2), ("bus passes", 20)]
SENTENCES = [
    "The weather is lovely today.", "Where is the nearest train station?", "I would like a cup of tea, please.",
    "My brother works in a hospital.", "We are going to the beach this weekend.", "This book is very interesting.",
    "Can you help me find my keys?", "The museum opens at nine o'clock.", "I have been learning to play the guitar.",
    "Please close the window, it is cold.", "Our team won the match yesterday.", "How much does this jacket cost?",
    "The children are playing in the garden.", "I forgot my umbrella at home.", "She reads the newspaper every morning.",
    "Thank you for your help with the project.",
]
TARGET_LANGUAGES = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch"]
DILEMMAS = [
    "whether to take a higher-paid job with a long commute", "whether schools should ban phones in class",
    "whether cities should make public transport free", "whether to rent or buy a home",
    "whether homework helps young students", "whether to learn a skill alone or in a class",
    "whether four-day work weeks are a good idea", "whether zoos do more good than harm",
]
ROLES = ["a friendly museum guide", "a pirate captain", "a medieval baker", "a travel agent", "a patient tutor",
         "a space station commander", "a detective in 1920s London", "a cheerful fitness coach",
         "a librarian", "a chef on a cooking show"]


def _composed(rng: random.Random) -> list:
    out = []
    add = lambda cat, text: out.append({"category": cat, "prompt": text})  # noqa: E731
    for t in TOPICS:
        add("chat", f"Can you give me some practical tips for {t}?")
        add("chat", f"I'm a beginner at {t}. What mistakes should I avoid?")
        add("chat", f"Make a simple one-week plan for {t}.")
    for th in THINGS:
        add("explain", f"Explain {th} to {rng.choice(AUDIENCES)}.")
        add("explain", f"What are three surprising facts about {th}?")
        add("explain", f"How does {th} work? Keep it short.")
        add("writing", f"Write {rng.choice(FORMS)} about {th}.")
    for form in FORMS:
        for th in rng.sample(THINGS, 4):
            add("writing", f"Write {form} about {th}.")
    for task in CODE_TASKS:
        for lang in rng.sample(LANGUAGES, 3):
            add("code", f"Write a {lang} function that {task}.")
        add("code", f"Explain step by step how a function that {task} works, then write it in Python.")
    for q in CODE_QUESTIONS:
        add("code", q)
    for i in range(120):
        a, b = rng.sample(PEOPLE, 2)
        (item, price), n, m = rng.choice(ITEMS), rng.randint(2, 19), rng.randint(2, 9)
        kind = i % 6
        if kind == 0:
            add("math", f"{a} buys {n} {item} at {price} dollars each and pays with a 100-dollar note. How much change does {a} get?")
        elif kind == 1:
            add("math", f"{a} has {n * m} {item} and shares them equally among {m} friends. How many does each friend get?")
        elif kind == 2:
            add("math", f"What is {rng.randint(12, 99)} times {rng.randint(12, 99)}? Show your working.")
        elif kind == 3:
            add("math", f"A train travels {n * 10} kilometres in {m} hours. What is its average speed?")
        elif kind == 4:
            add("math", f"{a} is {n} years older than {b}. Together they are {2 * m + n + 20} years old. How old is each?")
        else:
            add("math", f"Solve for x: {m}x + {n} = {m * rng.randint(1, 12) + n}.")
    for s in SENTENCES:
        for lang in rng.sample(TARGET_LANGUAGES, 3):
            add("translation", f"Translate into {lang}: \"{s}\"")
    for d in DILEMMAS:
        add("reasoning", f"Give the main arguments for and against {d}.")
        add("reasoning", f"Help me decide {d}. Ask yourself the key questions first.")
    for r in ROLES:
        for t in rng.sample(TOPICS, 2):
            add("roleplay", f"Pretend you are {r}. Give me advice about {t}.")
        add("roleplay", f"You are {r}. Introduce yourself and describe a typical day.")
    for th in rng.sample(THINGS, 20):
        add("extraction", f"List the key terms someone should know about {th}, one per line.")
        add("extraction", f"Give a table of three facts about {th} with a column for each fact's source type.")
    return out


def _summaries(rng: random.Random, documents: list) -> list:
    """Summarisation and rewriting prompts over the model's own earlier answers (no third-party text)."""
    out = []
    for doc in documents:
        passage = doc.strip()[:900]
        if len(passage) < 200:
            continue
        ask = rng.choice(["Summarise the following text in two sentences:", "Give the main points of this text as a bullet list:",
                          "Rewrite this text so that a child can understand it:", "What is this text about? Answer briefly."])
        out.append({"category": "summarisation", "prompt": f"{ask}\n\n{passage}"})
    return out


# Long-context and "into English" tasks: answers that copy from, condense or translate a long input.
# Without them the drafters only ever saw short prompts and drafted poorly after long documents.
FOREIGN = {
    "German": [
        "Der Zug nach Hamburg hat heute Morgen zwanzig Minuten Verspätung.", "Meine Schwester wohnt seit drei Jahren in Wien.",
        "Im Sommer fahren wir oft mit dem Fahrrad an den See.", "Das neue Museum zeigt Bilder aus dem neunzehnten Jahrhundert.",
        "Der Bürgermeister hat den Bau einer zweiten Brücke angekündigt.", "Kannst du mir sagen, wann die Bibliothek schließt?",
        "Die Preise für Gemüse sind in diesem Winter stark gestiegen.", "Unser Nachbar repariert alte Uhren in seiner Werkstatt.",
        "Nach dem Regen war die Luft frisch und kühl.", "Die Schüler haben ein Theaterstück über den Wald geschrieben.",
        "Wir haben das Konzert wegen des Sturms verschoben.", "Der Arzt empfiehlt, jeden Tag eine halbe Stunde zu gehen.",
        "Die Firma sucht neue Mitarbeiter für ihr Büro in Berlin.", "In der Altstadt gibt es viele kleine Cafés.",
        "Er hat das Buch in nur zwei Tagen gelesen.", "Die Mannschaft trainiert dreimal pro Woche im Stadion.",
    ],
    "French": [
        "Le marché ouvre tous les samedis sur la place de l'église.", "Nous avons visité un vieux château près de la rivière.",
        "Ma grand-mère prépare une soupe aux légumes chaque dimanche.", "Le musée sera fermé pendant les travaux.",
        "Les enfants ont planté des arbres dans la cour de l'école.", "Il faut réserver une table pour ce soir.",
        "Le train de nuit arrive à Marseille à six heures.", "Elle apprend le piano depuis l'âge de sept ans.",
    ],
    "Spanish": [
        "El autobús pasa cada quince minutos por la plaza.", "Mi hermano trabaja en una librería del centro.",
        "Mañana vamos a cocinar paella con unos amigos.", "La biblioteca tiene una sala nueva para estudiantes.",
        "Hace mucho calor en la ciudad durante agosto.", "El equipo ganó el partido en el último minuto.",
        "Quiero aprender a tocar la guitarra este año.", "Los turistas visitaron el puerto al atardecer.",
    ],
}
SHORT_QUESTIONS = [
    "Who wrote the play Romeo and Juliet?", "What is the capital city of Canada?", "How many legs does a spider have?",
    "What gas do plants take in from the air?", "Which planet is known as the red planet?", "Who painted the Mona Lisa?",
    "What is the largest ocean on Earth?", "When did the first person walk on the moon?", "What is the boiling point of water in Celsius?",
    "Which language has the most native speakers?", "What is the chemical symbol for gold?", "Who developed the theory of relativity?",
    "How many continents are there?", "What is the longest river in Africa?", "What does a thermometer measure?",
    "Who was the first president of the United States?", "What is the smallest prime number?", "Which organ pumps blood around the body?",
    "What is the main ingredient of guacamole?", "In which country are the pyramids of Giza?", "What is the freezing point of water in Fahrenheit?",
    "How many days are there in a leap year?", "Which animal is the largest mammal?", "What is the hardest natural material?",
    "Who invented the telephone?", "What currency is used in Japan?", "What is the tallest mountain in the world?",
    "Which instrument has 88 keys?", "What is the square root of 144?", "Which metal is liquid at room temperature?",
]
PASSAGE_QUESTIONS = [
    "What is the main idea of the second passage?", "What do the passages above have in common?",
    "Using only the passages, list three facts they mention.", "Which passage would help a beginner most, and why?",
    "Quote the sentence from the first passage that best sums it up.", "Answer using the passages: what advice do they give?",
    "Which passage is the longest, and what is it about?", "Compare the first and the last passage in a few sentences.",
]
SUMMARY_ASKS = [
    "Summarise the following article in a short paragraph.", "Write a brief summary of the text below.",
    "Read the document and give its key points.", "Condense the following notes into three sentences.",
    "What are the most important ideas in the text below? Summarise them.",
]


def _long_context(rng: random.Random, documents: list, n_summaries: int = 100, n_passages: int = 100) -> list:
    """Long inputs built from several of the model's own earlier answers, plus short questions and
    translations into English (the hand-written sentences above)."""
    out = []
    docs = [d.strip() for d in documents if len(d.strip()) >= 200]
    if len(docs) >= 5:
        for i in range(n_summaries):
            text = "\n\n".join(rng.sample(docs, rng.randint(3, 5)))
            ask = rng.choice(SUMMARY_ASKS)
            prompt = f"{ask}\n\n{text}" if i % 2 == 0 else f"{text}\n\n{ask}"
            out.append({"category": "long_summarisation", "prompt": prompt})
        for _ in range(n_passages):
            picked = rng.sample(docs, rng.randint(3, 5))
            text = "\n\n".join(f"Passage {j + 1}: {d}" for j, d in enumerate(picked))
            out.append({"category": "passages_qa", "prompt": f"{text}\n\nQuestion: {rng.choice(PASSAGE_QUESTIONS)}"})
    for q in SHORT_QUESTIONS:
        out.append({"category": "short_qa", "prompt": q})
        out.append({"category": "short_qa", "prompt": f"{q} Answer in one sentence."})
    for lang, sentences in FOREIGN.items():
        for s in sentences:
            out.append({"category": "translation", "prompt": f"Translate this {lang} sentence into English: {s}"})
        for _ in range(len(sentences) // 2):
            text = " ".join(rng.sample(sentences, 3))
            out.append({"category": "translation", "prompt": f"Translate from {lang} to English:\n{text}"})
    return out


def build_prompt_set(seed: int = 0, corpus: Path | None = None) -> list:
    """[{id, category, prompt, source}] in a fixed order."""
    rng = random.Random(seed)
    rows = [{**json.loads(l), "source": "handwritten"} for l in HANDWRITTEN.read_text().splitlines() if l.strip()]
    composed = _composed(rng)
    corpus = corpus or ASSETS / "corpus" / "selfgen_smollm2.jsonl"
    docs = [json.loads(l)["text"] for l in corpus.read_text().splitlines() if l.strip()] if corpus.exists() else []
    composed += _summaries(rng, docs)
    # a separate stream, so the prompts (and ids) above stay the same as before these were added
    composed += _long_context(random.Random(seed + 1), docs)
    for i, r in enumerate(composed):
        rows.append({"id": f"{r['category']}-c{i:04d}", "category": r["category"], "prompt": r["prompt"], "source": "composed"})
    # last, so every earlier prompt keeps its place: queries the embedded model wrote itself (see queries.py)
    rows += [{"id": q["id"], "category": q["category"], "prompt": q["prompt"], "source": "self-written"}
             for q in load_queries()]
    return rows
